"""Test helpers for the export and Predictor tests: real articles, a random net, a trained tokenizer."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    return Path(os.environ.get("NEWSMTL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def allsides_path() -> Path:
    return data_dir() / "allsides-article-bias" / "articles.jsonl.gz"


def iter_articles(path: Path | None = None) -> Iterator[dict[str, Any]]:
    with gzip.open(path or allsides_path(), "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def read_articles(count: int, *, skip: int = 0) -> list[dict[str, Any]]:
    return list(islice(iter_articles(), skip, skip + count))
