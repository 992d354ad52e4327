"""Replay inputs without a model: flag parsing, streaming, positions and resume, memory bound."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsmtl._errors import ConfigError, DataError
from newsmtl.replay import (
    AppendFile,
    Checkpoint,
    FileReader,
    PartitionRange,
    RangeSpec,
    RawRecord,
    parse_field_mapping,
    parse_partition_range,
    parse_timestamp,
    stable_json,
)
from tests.replay._helpers import write_csv, write_jsonl

MAX_BYTES = 1_048_576


async def collect(
    reader: FileReader, resume: dict[str, object] | None = None, limit: int | None = None
) -> list[RawRecord]:
    await reader.open(resume)
    records = []
    try:
        gen = reader.records()
        async for record in gen:
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
        await gen.aclose()
    finally:
        await reader.close()
    return records


def test_parse_field_mapping() -> None:
    assert parse_field_mapping(["text=body", " id = article_id "]) == {"text": "body", "id": "article_id"}
    for bad, message in [
        ("body", "FIELD=COLUMN"),
        ("=x", "FIELD=COLUMN"),
        ("author=x", "unknown article field"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_field_mapping([bad])
    with pytest.raises(ConfigError, match="twice"):
        parse_field_mapping(["text=a", "text=b"])


def test_parse_partition_range() -> None:
    assert parse_partition_range("0:100-200") == PartitionRange(0, 100, 200)
    assert parse_partition_range("3:-50") == PartitionRange(3, None, 50)
    assert parse_partition_range("2:7-") == PartitionRange(2, 7, None)
    assert parse_partition_range("4") == PartitionRange(4, None, None)
    for bad in ("a:1-2", "0:1", "0:x-2", "-1:0-1", "0:9-3"):
        with pytest.raises(ConfigError):
            parse_partition_range(bad)


def test_parse_timestamp_and_range_spec() -> None:
    assert parse_timestamp("2024-03-01", flag="--from-time") == datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_timestamp("2024-03-01T12:30:00+02:00", flag="--to-time").utcoffset() is not None
    with pytest.raises(ConfigError, match="--to-time"):
        parse_timestamp("March 1st", flag="--to-time")
    with pytest.raises(ConfigError, match="cannot be combined"):
        RangeSpec(partitions=(PartitionRange(0),), from_offset=1)
    with pytest.raises(ConfigError, match="before"):
        RangeSpec(from_offset=9, to_offset=3)
    with pytest.raises(ConfigError, match="twice"):
        RangeSpec(partitions=(PartitionRange(0, 1, 2), PartitionRange(0, 5, 6)))


def test_stable_json_sorts_keys_and_is_compact() -> None:
    assert stable_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'


def test_jsonl_gz_resume_from_a_position(tmp_path: Path) -> None:
    rows = [{"id": "a%d" % i, "title": "t", "text": "x" * (i + 1)} for i in range(30)]
    rows.insert(5, "")  # a blank line: skipped, but counted in line numbers
    path = write_jsonl(tmp_path / "in.jsonl.gz", rows, gz=True)
    first = FileReader(path, max_bytes=MAX_BYTES)
    head = asyncio.run(collect(first, limit=12))
    position = first.position()
    assert [r.source.line for r in head] == [1, 2, 3, 4, 5, *range(7, 14)]
    assert position["line"] == 13
    rest = asyncio.run(collect(FileReader(path, max_bytes=MAX_BYTES), resume=position))
    assert [json.loads(r.value or b"")["id"] for r in rest] == ["a%d" % i for i in range(12, 30)]
    assert rest[0].source.line == 14


def test_csv_resume_and_row_numbers(tmp_path: Path) -> None:
    rows = [["a%d" % i, "Title %d" % i, "Body\nover two lines %d" % i] for i in range(10)]
    path = write_csv(tmp_path / "in.csv", ["id", "title", "text"], rows)
    first = FileReader(path, max_bytes=MAX_BYTES)
    head = asyncio.run(collect(first, limit=4))
    assert [r.source.line for r in head] == [2, 4, 6, 8]  # each record spans two lines
    rest = asyncio.run(collect(FileReader(path, max_bytes=MAX_BYTES), resume=first.position()))
    assert [json.loads(r.value or b"")["id"] for r in rest] == ["a%d" % i for i in range(4, 10)]
    assert rest[0].source.line == 10


def test_csv_without_a_text_column_is_a_config_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["id", "title", "body"], [["a", "t", "b"]])
    with pytest.raises(ConfigError, match="--field text=COLUMN"):
        asyncio.run(collect(FileReader(path, max_bytes=MAX_BYTES)))


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        asyncio.run(collect(FileReader(tmp_path / "nope.jsonl", max_bytes=MAX_BYTES)))


def test_reading_streams_in_bounded_memory(tmp_path: Path) -> None:
    # ~60 MB of JSON Lines (gzip-compressed on disk); reading them must never hold the file.
    path = tmp_path / "big.jsonl.gz"
    body = "lorem ipsum dolor sit amet " * 22
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        for i in range(100_000):
            fh.write(json.dumps({"id": "a%d" % i, "title": "title %d" % i, "text": body}) + "\n")

    async def count() -> int:
        reader = FileReader(path, max_bytes=MAX_BYTES)
        await reader.open(None)
        n = 0
        try:
            async for _ in reader.records():
                n += 1
        finally:
            await reader.close()
        return n

    tracemalloc.start()
    try:
        assert asyncio.run(count()) == 100_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, "reading peaked at %.1f MB" % (peak / 2**20)


def test_append_file_cuts_back_to_the_checkpointed_length(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    out = AppendFile(path, resume_length=None)
    out.write_lines(["one", "two"])
    out.sync()
    length = out.length
    out.write_lines(["three (after the checkpoint)"])
    out.close()
    resumed = AppendFile(path, resume_length=length)
    resumed.write_lines(["three"])
    resumed.close()
    assert path.read_text() == "one\ntwo\nthree\n"
    with pytest.raises(DataError, match="--restart"):
        AppendFile(path, resume_length=10_000)


def test_checkpoint_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    assert Checkpoint.load(path) is None
    checkpoint = Checkpoint(
        job={"input": 1}, position={"line": 3}, output_bytes=10, errors_bytes=0, done=False
    )
    checkpoint.save(path)
    loaded = Checkpoint.load(path)
    assert loaded is not None and loaded.position == {"line": 3} and loaded.output_bytes == 10
    assert loaded.mismatches({"input": 2}) == ["input"]
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a newsmtl replay checkpoint"):
        Checkpoint.load(path)


def test_replay_and_demo_are_torch_free() -> None:
    code = (
        "import sys, newsmtl.replay, newsmtl.demo, newsmtl.cli._replay, newsmtl.cli._demo; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
