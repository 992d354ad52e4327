"""Data loading with field mappings, deterministic stratified splits, modelled publications."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from newsmtl._errors import ConfigError, DataError
from newsmtl.model import (
    Example,
    load_examples,
    parse_field_overrides,
    select_publications,
    split_examples,
    subsample,
)
from newsmtl.model._data import split_fingerprint

OUTLET_SIZES = {"big.com": 400, "mid.com": 120, "small.com": 25, "tiny.com": 2, "": 30}


def _rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for outlet, n in OUTLET_SIZES.items():
        for i in range(n):
            rows.append(
                {"id": "%s-%d" % (outlet or "none", i), "title": "t%d" % i, "text": "body %d of %s" % (i, outlet),
                 "topic_coarse": ["politics", "world", "health"][i % 3], "publication": outlet,
                 "bias_text": ["left", "center", "right"][i % 3], "bias": i % 3}
            )
    return rows


def _examples() -> list[Example]:
    return [
        Example(id=str(r["id"]), title=str(r["title"]), text=str(r["text"]), topic=str(r["topic_coarse"]),
                publication=str(r["publication"]) or None, bias=str(r["bias_text"]))
        for r in _rows()
    ]


def test_split_is_deterministic_disjoint_and_complete() -> None:
    examples = _examples()
    a = split_examples(examples, seed=3)
    b = split_examples(examples, seed=3)
    c = split_examples(examples, seed=4)
    assert a == b
    assert a.test != c.test  # the seed matters
    all_idx = a.train + a.dev + a.test
    assert sorted(all_idx) == list(range(len(examples)))
    assert len(set(all_idx)) == len(all_idx)
    assert split_fingerprint(examples, a.train) == split_fingerprint(examples, b.train)
    assert split_fingerprint(examples, a.train) != split_fingerprint(examples, c.train)


def test_split_is_stratified_by_publication() -> None:
    examples = _examples()
    split = split_examples(examples, seed=11, dev_fraction=0.1, test_fraction=0.2)
    for part, fraction in ((split.dev, 0.1), (split.test, 0.2)):
        counts = Counter(examples[i].publication or "" for i in part)
        for outlet, n in OUTLET_SIZES.items():
            if n >= 20:  # every sizeable outlet keeps its share, to within one article
                assert abs(counts[outlet] - n * fraction) <= 1, (outlet, counts[outlet])
    # an outlet with 2 articles keeps at least one in train
    assert any(examples[i].publication == "tiny.com" for i in split.train)


def test_split_of_one_outlet_ignores_the_others() -> None:
    examples = _examples()
    fewer = [e for e in examples if e.publication != "mid.com"]
    big_a = {examples[i].id for i in split_examples(examples, seed=5).test if examples[i].publication == "big.com"}
    big_b = {fewer[i].id for i in split_examples(fewer, seed=5).test if fewer[i].publication == "big.com"}
    assert big_a == big_b


def test_split_fractions_are_validated() -> None:
    with pytest.raises(ConfigError):
        split_examples(_examples(), seed=1, dev_fraction=0.6, test_fraction=0.5)


def test_subsample_is_seeded() -> None:
    assert subsample(1000, 100, seed=1) == subsample(1000, 100, seed=1)
    assert subsample(1000, 100, seed=1) != subsample(1000, 100, seed=2)
    assert len(set(subsample(1000, 100, seed=1))) == 100
    assert subsample(50, None, seed=1) == list(range(50))


def test_select_publications_threshold_and_explicit() -> None:
    examples = _examples()
    split = split_examples(examples, seed=1)
    assert select_publications(examples, split.train, min_articles=300) == ["big.com"]
    assert select_publications(examples, split.train, min_articles=15) == ["big.com", "mid.com", "small.com"]
    assert select_publications(examples, split.train, min_articles=15, max_publications=2) == ["big.com", "mid.com"]
    assert select_publications(examples, split.train, min_articles=1, explicit=["WWW.Mid.com"]) == ["mid.com"]
    with pytest.raises(DataError, match="no publication has >= 10000"):
        select_publications(examples, split.train, min_articles=10_000)
    with pytest.raises(DataError, match="without training articles"):
        select_publications(examples, split.train, min_articles=1, explicit=["absent.com"])


def _write_jsonl_gz(path: Path, rows: list[dict[str, object]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def test_load_jsonl_gz_defaults(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    _write_jsonl_gz(path, _rows())
    examples = load_examples(path)
    assert len(examples) == sum(OUTLET_SIZES.values())
    first = examples[0]
    assert (first.topic, first.publication, first.bias) == ("politics", "big.com", "left")  # bias_text preferred
    assert examples[-1].publication is None  # blank publication
    fine = load_examples(path, label_field="bias")  # any column can be the label
    assert fine[1].topic == "1"


def test_load_csv_with_field_mapping(tmp_path: Path) -> None:
    path = tmp_path / "own.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["headline", "body", "category", "site"])
        writer.writeheader()
        writer.writerow({"headline": "H1", "body": "Some text", "category": "sport", "site": "https://www.Example.com/x"})
        writer.writerow({"headline": "", "body": "", "category": "sport", "site": "example.com"})  # blank: skipped
        writer.writerow({"headline": "H3", "body": "More text", "category": "arts", "site": ""})
    fields = parse_field_overrides(["title=headline", "text=body", "topic=category", "publication=site"])
    examples = load_examples(path, fields=fields)
    assert [(e.id, e.title, e.topic, e.publication, e.bias) for e in examples] == [
        ("row-2", "H1", "sport", "example.com", None),
        ("row-4", "H3", "arts", None, None),
    ]


def test_missing_field_is_a_clear_data_error(tmp_path: Path) -> None:
    path = tmp_path / "own.jsonl"
    path.write_text(json.dumps({"headline": "x", "body": "y", "publication": "a.com", "topic_coarse": "z"}) + "\n")
    with pytest.raises(DataError, match=r"required field 'text' \(column 'text'\) is missing.*--field text=COLUMN"):
        load_examples(path)
    with pytest.raises(DataError, match=r"required field 'topic' \(column 'category'\)"):
        load_examples(path, fields={"text": "body", "topic": "category"})
    with pytest.raises(DataError, match="bias column 'leaning' is missing"):
        load_examples(path, fields={"text": "body", "bias": "leaning"})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", "{not json\n", "invalid JSON"),
        ("bad.txt", "x", "unsupported dataset format"),
        ("list.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("empty.jsonl", "\n", "no usable examples"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_examples(path)


def test_missing_file_and_bad_overrides(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset not found"):
        load_examples(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="LOGICAL=COLUMN"):
        parse_field_overrides(["text"])
    with pytest.raises(ConfigError, match="unknown logical field 'body'"):
        parse_field_overrides(["body=text"])
