"""File replay through the real Predictor (tiny bundle): determinism, resume, errors, formats."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from newsmtl.schemas import ClassificationResult
from tests.replay._helpers import read_lines, run_cli, write_csv, write_jsonl
from tests.replay.conftest import BAD_RECORDS

REPO_ROOT = Path(__file__).resolve().parents[2]


def replay(bundle: Path, *args: Any) -> Any:
    return run_cli(["replay", "--bundle", bundle, "--no-progress", *args])


def test_file_replay_is_deterministic(
    bundle_dir: Path, mixed_file: Path, tmp_path: Path, articles: list[dict[str, Any]]
) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    r1 = replay(bundle_dir, "--input", mixed_file, "--output", first, "--batch-size", 16)
    r2 = replay(bundle_dir, "--input", mixed_file, "--output", second, "--batch-size", 16)
    assert r1.status == r2.status == 1  # the file holds bad records
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a.jsonl.errors.jsonl").read_bytes() == (
        tmp_path / "b.jsonl.errors.jsonl"
    ).read_bytes()

    lines = first.read_bytes().decode("utf-8").splitlines()
    assert len(lines) == len(articles)
    by_id = {a["id"]: a for a in articles}
    previous_line = 0
    for line in lines:
        obj = json.loads(line)
        # Stable serialization: sorted keys, compact separators.
        assert line == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        result = ClassificationResult.model_validate(obj)
        article = by_id[result.id]
        source = result.topic.source
        assert source is not None and source.kind == "file" and source.path == str(mixed_file)
        assert source.line > previous_line  # input order
        previous_line = source.line
        # classified_at is the article's time, not the wall clock.
        expected = article.get("published_at", "1970-01-01T00:00:00Z")
        assert (
            obj["topic"]["classified_at"] == obj["style"]["classified_at"] == expected.replace("+00:00", "Z")
        )
    assert (
        "read %d, classified %d, failed %d"
        % (len(articles) + len(BAD_RECORDS), len(articles), len(BAD_RECORDS))
        in r1.out
    )


def test_classified_at_now_uses_the_wall_clock(bundle_dir: Path, clean_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "now.jsonl"
    before = datetime.now(UTC) - timedelta(seconds=1)
    result = replay(
        bundle_dir, "--input", clean_file, "--output", out, "--classified-at", "now", "--stop-after", 1
    )
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert result.status == 0
    stamps = [datetime.fromisoformat(line["topic"]["classified_at"]) for line in read_lines(out)]
    assert stamps and all(before <= stamp <= after for stamp in stamps)


def test_classified_at_a_fixed_time(bundle_dir: Path, clean_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "fixed.jsonl"
    result = replay(
        bundle_dir, "--input", clean_file, "--output", out, "--classified-at", "2024-05-06T07:08:09+02:00"
    )
    assert result.status == 0
    assert {line["style"]["classified_at"] for line in read_lines(out)} == {"2024-05-06T05:08:09Z"}


def test_bad_records_go_to_the_errors_file_and_fail_the_exit_status(
    bundle_dir: Path, mixed_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = replay(bundle_dir, "--input", mixed_file, "--output", out)
    assert result.status == 1
    errors = read_lines(tmp_path / "out.jsonl.errors.jsonl")
    assert {e["source"]["line"]: e["error_class"] for e in errors} == {
        line: kind for line, (_, kind) in BAD_RECORDS.items()
    }
    for error in errors:
        assert error["reason"] and error["source"]["path"] == str(mixed_file)
    assert "failed %d" % len(BAD_RECORDS) in result.out
    assert "errors: %s" % (tmp_path / "out.jsonl.errors.jsonl") in result.out


def test_clean_input_exits_zero_and_writes_no_errors_file(
    bundle_dir: Path, clean_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.errors.jsonl").write_text("stale errors of an earlier replay\n")
    result = replay(
        bundle_dir, "--input", clean_file, "--output", out, "--summary-json", tmp_path / "summary.json"
    )
    assert result.status == 0, result.err
    assert len(read_lines(out)) == 60
    assert not (tmp_path / "out.jsonl.errors.jsonl").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["read"], summary["classified"], summary["failed"]) == (60, 60, 0)
    assert summary["rate_per_s"] > 0


def test_oversize_line_is_an_error_not_a_crash(
    bundle_dir: Path, tmp_path: Path, articles: list[dict[str, Any]]
) -> None:
    huge = json.dumps({"id": "huge", "title": "t", "text": "word " * 300_000})  # ~1.5 MB > 1 MiB limit
    source = write_jsonl(tmp_path / "in.jsonl", [articles[0], huge, articles[1]])
    out = tmp_path / "out.jsonl"
    result = replay(bundle_dir, "--input", source, "--output", out)
    assert result.status == 1
    assert [r["id"] for r in read_lines(out)] == [articles[0]["id"], articles[1]["id"]]
    (error,) = read_lines(tmp_path / "out.jsonl.errors.jsonl")
    assert error["error_class"] == "oversize" and error["source"]["line"] == 2


def test_resume_after_stop_continues_without_duplicates(
    bundle_dir: Path, mixed_file: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "ref.jsonl"
    assert replay(bundle_dir, "--input", mixed_file, "--output", reference, "--batch-size", 16).status == 1

    out = tmp_path / "out.jsonl"
    first = replay(bundle_dir, "--input", mixed_file, "--output", out, "--batch-size", 16, "--stop-after", 50)
    assert "stopped after 64 records" in first.out
    checkpoint = json.loads((tmp_path / "out.jsonl.checkpoint.json").read_text())
    assert checkpoint["done"] is False and checkpoint["position"]["line"] == 64
    assert checkpoint["output_bytes"] == out.stat().st_size
    partial = out.read_bytes()
    assert 0 < len(partial) < reference.stat().st_size

    # A crash after the checkpoint leaves bytes the checkpoint does not cover: resume cuts them.
    with out.open("ab") as fh:
        fh.write(b'{"id": "half-written')
    with (tmp_path / "out.jsonl.errors.jsonl").open("ab") as fh:
        fh.write(b"garbage\n")

    second = replay(bundle_dir, "--input", mixed_file, "--output", out, "--batch-size", 16)
    assert second.status == 1
    assert "resumed from" in second.out
    assert out.read_bytes() == reference.read_bytes()
    assert (tmp_path / "out.jsonl.errors.jsonl").read_bytes() == (
        tmp_path / "ref.jsonl.errors.jsonl"
    ).read_bytes()
    ids = [r["id"] for r in read_lines(out)]
    assert len(ids) == len(set(ids))
    # Counts cover both runs.
    assert "read %d, classified" % (200 + len(BAD_RECORDS)) in second.out

    # Once done, running it again writes nothing more.
    third = replay(bundle_dir, "--input", mixed_file, "--output", out, "--batch-size", 16)
    assert "already complete" in third.out and out.read_bytes() == reference.read_bytes()


@pytest.mark.slow
def test_killed_replay_resumes_where_its_checkpoint_says(
    bundle_dir: Path, tmp_path: Path, articles: list[dict[str, Any]]
) -> None:
    # Enough input that the replay is still running when the first checkpoint appears.
    rows = articles * 5
    rows = [dict(row, id="%s-%d" % (row["id"], i)) for i, row in enumerate(rows)]
    source = write_jsonl(tmp_path / "big.jsonl.gz", rows, gz=True)
    reference = tmp_path / "ref.jsonl"
    assert replay(bundle_dir, "--input", source, "--output", reference, "--batch-size", 4).status == 0

    out = tmp_path / "out.jsonl"
    checkpoint_path = tmp_path / "out.jsonl.checkpoint.json"
    command = [
        sys.executable,
        "-c",
        "from newsmtl.cli import run; run()",
        "replay",
        "--bundle",
        str(bundle_dir),
        "--input",
        str(source),
        "--output",
        str(out),
        "--batch-size",
        "4",
        "--no-progress",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint_path.exists():
            assert proc.poll() is None, "the replay ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    checkpoint = json.loads(checkpoint_path.read_text())
    assert checkpoint["done"] is False, "the replay finished before it could be interrupted"
    assert out.stat().st_size >= checkpoint["output_bytes"]

    resumed = replay(bundle_dir, "--input", source, "--output", out, "--batch-size", 4)
    assert resumed.status == 0, resumed.err
    assert "resumed from" in resumed.out
    assert out.read_bytes() == reference.read_bytes()
    assert len(read_lines(out)) == len(rows)


def test_csv_with_a_column_mapping_matches_the_jsonl_replay(
    bundle_dir: Path, tmp_path: Path, articles: list[dict[str, Any]]
) -> None:
    sample = articles[:30]
    header = ["article_id", "headline", "body", "outlet", "published_at", "extra"]
    rows = [
        [a["id"], a["title"], a["text"], a["publication"] if i % 3 else "", a.get("published_at", ""), "x"]
        for i, a in enumerate(sample)
    ]
    csv_file = write_csv(tmp_path / "in.csv", header, rows)
    jsonl_rows = []
    for i, a in enumerate(sample):
        row = {k: v for k, v in a.items() if k != "publication" or i % 3}
        jsonl_rows.append(row)
    jsonl_file = write_jsonl(tmp_path / "in.jsonl.gz", jsonl_rows, gz=True)

    csv_out, jsonl_out = tmp_path / "csv.jsonl", tmp_path / "jsonl.jsonl"
    mapping = [
        "--field",
        "id=article_id",
        "--field",
        "title=headline",
        "--field",
        "text=body",
        "--field",
        "publication=outlet",
    ]
    result = replay(bundle_dir, "--input", csv_file, "--output", csv_out, *mapping)
    assert result.status == 0, result.err + result.out
    assert replay(bundle_dir, "--input", jsonl_file, "--output", jsonl_out).status == 0

    from_csv, from_jsonl = read_lines(csv_out), read_lines(jsonl_out)
    assert [r["id"] for r in from_csv] == [a["id"] for a in sample]
    for c, j in zip(from_csv, from_jsonl, strict=True):
        assert c["topic"]["topic_scores"] == j["topic"]["topic_scores"]
        assert c["style"]["styles"] == j["style"]["styles"]
        assert c["topic"]["publication"] == j["topic"]["publication"]
        assert c["topic"]["classified_at"] == j["topic"]["classified_at"]
    # Article texts span several physical lines in the CSV: the source is where each row starts.
    lines = [r["topic"]["source"]["line"] for r in from_csv]
    assert lines[0] == 2 and lines == sorted(lines) and lines[-1] > len(sample)


def test_csv_row_with_the_wrong_number_of_columns_is_an_error(bundle_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,title,text\na,Title A,Body A\nb,Title B\nc,Title C,Body C\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert replay(bundle_dir, "--input", path, "--output", out).status == 1
    assert [r["id"] for r in read_lines(out)] == ["a", "c"]
    (error,) = read_lines(tmp_path / "out.jsonl.errors.jsonl")
    assert error["source"]["line"] == 3 and "columns" in error["reason"]


def test_dry_run_validates_and_writes_nothing(bundle_dir: Path, mixed_file: Path, tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    result = replay(bundle_dir, "--input", mixed_file, "--output", tmp_path / "out.jsonl", "--dry-run")
    assert result.status == 1
    assert (
        "dry run: read %d, valid 200, invalid %d" % (200 + len(BAD_RECORDS), len(BAD_RECORDS)) in result.out
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # Without an errors file, the bad records are shown on stderr.
    for line in BAD_RECORDS:
        assert '"line": %d' % line in result.err


def test_unfinished_checkpoint_of_another_replay_is_refused(
    bundle_dir: Path, mixed_file: Path, clean_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    replay(bundle_dir, "--input", mixed_file, "--output", out, "--batch-size", 8, "--stop-after", 8)
    result = replay(bundle_dir, "--input", clean_file, "--output", out)
    assert result.status == 2
    assert "different input" in result.err and "--restart" in result.err
    restarted = replay(bundle_dir, "--input", clean_file, "--output", out, "--restart")
    assert restarted.status == 0 and len(read_lines(out)) == 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one input"),
        (["--input", "x.jsonl", "--topic", "t", "--output", "o.jsonl"], "give exactly one input"),
        (["--input", "{missing}", "--output", "{tmp}/o.jsonl"], "does not exist"),
        (["--input", "{good}"], "nowhere to write results"),
        (["--input", "{good}", "--output", "{tmp}/no/such/dir/o.jsonl"], "does not exist"),
        (["--input", "{good}", "--output", "{tmp}/o.jsonl", "--field", "body"], "FIELD=COLUMN"),
        (["--input", "{good}", "--output", "{tmp}/o.jsonl", "--field", "bogus=x"], "unknown article field"),
        (["--input", "{good}", "--output", "{tmp}/o.jsonl", "--from-offset", "3"], "need --topic"),
        (["--input", "{good}", "--output", "{tmp}/o.jsonl", "--classified-at", "soon"], "ISO-8601"),
        (["--input", "{good}", "--output", "{tmp}/o.jsonl", "--format", "xml"], "--format"),
        (["--input", "{good}", "--output", "{tmp}/o.jsonl", "--batch-size", "0"], "batch-size"),
        (["--topic", "t", "--output", "{tmp}/o.jsonl", "--partition-range", "x:1-2"], "PARTITION:START-END"),
        (["--topic", "t", "--output", "{tmp}/o.jsonl", "--partition-range", "0:5-2"], "END is before START"),
        (
            ["--topic", "t", "--output", "{tmp}/o.jsonl", "--from-offset", "1", "--from-time", "2024-01-01"],
            "not both",
        ),
        (["--topic", "t", "--output", "{tmp}/o.jsonl", "--field", "text=body"], "apply to --input"),
        (["--input", "{good}", "--output", "{tmp}/o.jsonl", "--bundle", "{tmp}/nope"], "not a directory"),
    ],
)
def test_bad_flags_and_unreadable_inputs_exit_2(
    args: list[str], message: str, clean_file: Path, tmp_path: Path
) -> None:
    filled = [a.format(missing=tmp_path / "missing.jsonl", tmp=tmp_path, good=clean_file) for a in args]
    result = run_cli(["replay", *filled])
    assert result.status == 2, (result.out, result.err)
    assert message in result.err


def test_unreadable_input_file_exits_2(bundle_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"id": "a", "title": "t", "text": "x"}\n' * 50)[:40])  # truncated gzip
    result = replay(bundle_dir, "--input", broken, "--output", tmp_path / "o.jsonl")
    assert result.status == 2
    assert "broken.jsonl.gz" in result.err
