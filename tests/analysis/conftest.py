"""Fixtures of the analysis tests: a small labelled BBC file for ``adapt`` (written to tmp)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.fixtures.models import data_dir


@pytest.fixture(scope="session")
def bbc_path() -> Path:
    path = data_dir() / "bbc-news-fulltext" / "articles.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError("the BBC data is missing at %s: set NEWSMTL_DATA_DIR" % path)
    return path


@pytest.fixture(scope="session")
def bbc_small(bbc_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 BBC articles, 16 per topic, as JSON Lines in a temporary directory (never in the repo)."""
    per_topic: dict[str, list[dict[str, str]]] = {}
    with gzip.open(bbc_path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            bucket = per_topic.setdefault(row["topic"], [])
            if len(bucket) < 16:
                bucket.append({k: row[k] for k in ("id", "title", "text", "topic")})
    out = tmp_path_factory.mktemp("bbc") / "bbc_small.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        for rows in per_topic.values():
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return out


@pytest.fixture(scope="session")
def bbc_label_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from newsmtl.analysis import BBC_TOPIC_MAP

    path = tmp_path_factory.mktemp("labelmap") / "bbc.json"
    path.write_text(json.dumps(BBC_TOPIC_MAP), encoding="utf-8")
    return path
