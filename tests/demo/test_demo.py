"""``newsmtl demo``: the packaged samples, the table, the missing-bundle path, the Kafka mode."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from newsmtl.demo import load_samples, read_samples_bytes
from newsmtl.text import normalize_publication
from tests.replay._helpers import CliResult, run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_FILE = REPO_ROOT / "src" / "newsmtl" / "demo" / "samples.jsonl"


def demo(*args: Any) -> CliResult:
    return run_cli(["demo", "--width", 240, *args])


def test_samples_are_many_valid_and_varied() -> None:
    raw = [json.loads(line) for line in SAMPLES_FILE.read_text(encoding="utf-8").splitlines()]
    articles = load_samples()
    assert len(articles) == len(raw) >= 24
    assert len({a.id for a in articles}) == len(articles)
    words = [len((a.title + " " + a.text).split()) for a in articles]
    assert min(words) >= 150 and max(words) <= 600
    assert max(words) - min(words) > 300  # short dispatches and long features
    claimed = [a.publication for a in articles]
    assert sum(p is None for p in claimed) >= 3  # no outlet at all
    assert sum("publication" not in r for r in raw) >= 3  # the field is absent, not null
    # Raw outlet spellings that normalize to a corpus domain, and outlets no model knows.
    assert any(p is not None and p != normalize_publication(p) for p in claimed)
    known = {"foxnews.com", "cnn.com", "reuters.com", "nytimes.com", "bbc.com", "npr.org", "apnews.com"}
    assert len({normalize_publication(p) for p in claimed} & known) >= 5
    assert sum(p is not None and p.endswith((".example", ".example.co.uk")) for p in claimed) >= 2
    languages = {a.language for a in articles}
    assert {"en", "en-GB"} <= languages
    texts = " ".join(a.text for a in articles)
    assert "colour" in texts or "organise" in texts or "favouring" in texts  # UK spelling
    assert "(Reuters)" in texts and "(AP)" in texts  # wire datelines


def test_packaged_samples_are_the_source_file() -> None:
    assert read_samples_bytes() == SAMPLES_FILE.read_bytes()


def test_samples_are_not_copied_from_the_corpus() -> None:
    from tests.replay._helpers import real_articles

    corpus_titles = {a["title"].strip().lower() for a in real_articles(34_000)}
    assert not [a.title for a in load_samples() if a.title.strip().lower() in corpus_titles]


def test_demo_shows_every_sample(tiny_bundle: Any) -> None:
    result = demo("--bundle", Path(getattr(tiny_bundle, "path", tiny_bundle)))
    assert result.status == 0, result.err
    articles = load_samples()
    for article in articles:
        assert article.id in result.out
    assert "newsmtl demo: %d sample articles" % len(articles) in result.out
    for header in ("claimed outlet", "topic", "shared / private", "top-3 publication styles"):
        assert header in result.out
    # Every row carries a probability and a shared/private split.
    rows = [line for line in result.out.splitlines() if re.search(r"demo-\d{3}", line)]
    assert len(rows) == len(articles)
    assert all(re.search(r"\d\.\d\d", row) and re.search(r"\d+% / +\d+%", row) for row in rows)


def test_demo_without_a_default_bundle_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import newsmtl.consumer._predictor as predictor_module

    monkeypatch.setattr(predictor_module, "DEFAULT_BUNDLE_RESOURCE", ("_resources", "no_such_bundle"))
    result = demo()
    assert result.status == 2
    assert "no default model bundle" in result.err and "--bundle" in result.err
    assert "Traceback" not in result.err


def test_demo_with_a_missing_bundle_dir_exits_2(tmp_path: Path) -> None:
    result = demo("--bundle", tmp_path / "nope")
    assert result.status == 2 and "not a directory" in result.err


def test_demo_with_a_bad_samples_file_exits_2(tiny_bundle: Any, tmp_path: Path) -> None:
    bad = tmp_path / "samples.jsonl"
    bad.write_text('{"id": "x", "title": "t"}\n', encoding="utf-8")
    result = demo("--bundle", Path(getattr(tiny_bundle, "path", tiny_bundle)), "--samples", bad)
    assert result.status == 2 and "line 1" in result.err


@pytest.mark.integration
async def test_demo_streams_the_samples_through_kafka(tiny_bundle: Any, kafka_bootstrap: str) -> None:
    bundle = Path(getattr(tiny_bundle, "path", tiny_bundle))
    argv = [
        "demo",
        "--width",
        240,
        "--bundle",
        bundle,
        "--kafka",
        kafka_bootstrap,
        "--interval",
        0,
        "--limit",
        8,
    ]
    result = await asyncio.to_thread(run_cli, argv)
    assert result.status == 0, result.err
    for article in load_samples()[:8]:
        assert re.search(r"%s arrived after \d+ ms" % article.id, result.out), article.id
    assert "8 of 8 classified" in result.out
    assert "8 articles through Kafka and the service" in result.out
