"""Helpers of the replay tests: real articles from ../shared/data, files in every input format,
and the CLI run in-process."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from newsmtl.cli import main
from tests.fixtures.models import data_dir

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def real_articles(count: int, *, skip: int = 0) -> list[dict[str, Any]]:
    """Articles of the allsides corpus as wire records (``published_at`` from a clean ``date``)."""
    path = data_dir() / "allsides-article-bias" / "articles.jsonl.gz"
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in islice(fh, skip, skip + count):
            raw = json.loads(line)
            row = {
                "id": raw["id"],
                "title": raw["title"],
                "text": raw["text"],
                "publication": raw["publication"],
            }
            if _DATE.match(raw.get("date") or "") and raw["date"] > "1990":
                row["published_at"] = raw["date"] + "T12:00:00Z"
            rows.append(row)
    return rows


def jsonl_lines(rows: Iterable[dict[str, Any] | str]) -> str:
    """Rows as JSON Lines; a ``str`` row is written verbatim (for broken records)."""
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any] | str], *, gz: bool = False) -> Path:
    data = jsonl_lines(rows).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@dataclass(frozen=True)
class CliResult:
    status: int
    out: str
    err: str


def run_cli(args: Sequence[str]) -> CliResult:
    """``newsmtl ARGS`` in this process; returns its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main([str(a) for a in args])
    return CliResult(status, out.getvalue(), err.getvalue())
