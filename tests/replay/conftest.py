"""Fixtures of the replay tests: the real tiny bundle and a file of real articles with bad records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.replay._helpers import real_articles, write_jsonl


@pytest.fixture(scope="session")
def bundle_dir(tiny_bundle: Any) -> Path:
    """The directory of the trained, exported tiny model (the ``tiny_bundle`` fixture)."""
    return Path(getattr(tiny_bundle, "path", tiny_bundle))


@pytest.fixture(scope="session")
def articles() -> list[dict[str, Any]]:
    """200 real articles as wire records."""
    return real_articles(200)


# Bad records mixed into the input, with the error class each must get; position = line number.
BAD_RECORDS: dict[int, tuple[str, str]] = {
    4: ('{"id": "broken", "title": "t", "text": "no end', "invalid_json"),
    11: (json.dumps({"id": 17, "title": "t", "text": "numeric id"}), "wrong_type"),
    25: (json.dumps({"id": "no-text", "title": "t"}), "missing_field"),
    40: ('["an", "array"]', "not_an_object"),
    57: (json.dumps({"id": "blank", "title": "t", "text": "   "}), "schema"),
}


def mixed_rows(articles: list[dict[str, Any]]) -> list[dict[str, Any] | str]:
    """``articles`` with :data:`BAD_RECORDS` at their line numbers (1-based)."""
    rows: list[dict[str, Any] | str] = list(articles)
    for line in sorted(BAD_RECORDS):
        rows.insert(line - 1, BAD_RECORDS[line][0])
    return rows


@pytest.fixture
def mixed_file(tmp_path: Path, articles: list[dict[str, Any]]) -> Path:
    """A JSONL file: the 200 articles plus the 5 bad records of :data:`BAD_RECORDS`."""
    return write_jsonl(tmp_path / "mixed.jsonl", mixed_rows(articles))


@pytest.fixture
def clean_file(tmp_path: Path, articles: list[dict[str, Any]]) -> Path:
    return write_jsonl(tmp_path / "clean.jsonl", articles[:60])
