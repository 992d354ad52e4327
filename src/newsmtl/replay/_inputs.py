"""File inputs of a replay: JSONL, gzip-compressed JSONL and CSV, streamed record by record.

A reader never holds more than one record in memory. It knows its position after the last
record it yielded (``position()``, a JSON-able dict the checkpoint stores) and can start again
from such a position (``open(resume=...)``), so an interrupted replay continues exactly where
its last flushed batch ended.

Positions::

    JSONL (plain or gzip)   {"line": lines consumed, "offset": uncompressed bytes consumed}
    CSV (plain or gzip)     {"line": physical lines consumed, "row": data rows consumed}
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

from newsmtl._errors import ConfigError, DataError, InvalidArticleError
from newsmtl.schemas import FileSource, KafkaSource

__all__ = [
    "ARTICLE_FIELDS",
    "FileReader",
    "InputFormat",
    "RawRecord",
    "RecordReader",
    "parse_field_mapping",
]

InputFormat = Literal["auto", "jsonl", "csv"]

# The Article fields a column mapping may name, and the ones an input must be able to provide.
ARTICLE_FIELDS = ("id", "title", "text", "publication", "url", "published_at", "language")
_REQUIRED_FIELDS = ("id", "title", "text")

_GZIP_MAGIC = b"\x1f\x8b"
# Oversize lines are read past in chunks of this size, so one huge line never sits in memory.
_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One input record, not yet validated.

    ``value`` is the message bytes to hand to :func:`~newsmtl.schemas.decode_article`;
    ``error`` is set instead when the record is unusable before decoding (an oversize line, a
    CSV row with the wrong number of columns). ``timestamp`` is the Kafka message time, if any.
    """

    source: FileSource | KafkaSource
    value: bytes | None = None
    error: InvalidArticleError | None = None
    timestamp: datetime | None = None


class RecordReader(Protocol):
    """What the replay runner needs from an input."""

    def describe(self) -> dict[str, Any]:
        """What is being read (stored in the checkpoint to refuse resuming a different replay)."""
        ...

    async def open(self, resume: Mapping[str, Any] | None) -> None: ...

    async def close(self) -> None: ...

    def records(self) -> AsyncGenerator[RawRecord, None]: ...

    def position(self) -> dict[str, Any]:
        """Where the next record starts: a fresh JSON-able dict."""
        ...

    @property
    def progress_total(self) -> int | None:
        """Progress units of the whole input (bytes of a file, messages of a Kafka range)."""
        ...

    def progress_done(self) -> int: ...


def parse_field_mapping(specs: Sequence[str]) -> dict[str, str]:
    """``["text=body", "id=article_id"]`` -> ``{"text": "body", "id": "article_id"}``.

    Raises :class:`ConfigError` for a malformed spec, an unknown article field or a field
    mapped twice.
    """
    mapping: dict[str, str] = {}
    for spec in specs:
        field, sep, column = spec.partition("=")
        field, column = field.strip(), column.strip()
        if not sep or not field or not column:
            raise ConfigError("--field %r must look like FIELD=COLUMN, e.g. text=body" % spec)
        if field not in ARTICLE_FIELDS:
            raise ConfigError(
                "--field %r: unknown article field %r; expected one of %s"
                % (spec, field, ", ".join(ARTICLE_FIELDS))
            )
        if field in mapping:
            raise ConfigError("--field maps %r twice" % field)
        mapping[field] = column
    return mapping


def _detect_format(path: Path, fmt: InputFormat) -> Literal["jsonl", "csv"]:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return "csv" if name.endswith((".csv", ".tsv")) else "jsonl"


def _remap(obj: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The article fields of ``obj`` under ``mapping`` (unmapped fields keep their own names)."""
    out: dict[str, Any] = {}
    for field in ARTICLE_FIELDS:
        column = mapping.get(field, field)
        if column in obj:
            out[field] = obj[column]
    return out


class FileReader:
    """Streams records from a JSONL, JSONL.gz, CSV or CSV.gz file.

    Compression is detected from the file's first bytes, the format from its name (``.csv`` /
    ``.tsv``, optionally ``.gz``) unless ``fmt`` says. ``fields`` maps article fields to the
    input's column (CSV) or key (JSONL) names. ``source_path`` is the path written into every
    result's ``source`` (by default the path as given, so that outputs do not depend on the
    working directory's absolute location).
    """

    def __init__(
        self,
        path: Path,
        *,
        fmt: InputFormat = "auto",
        fields: Mapping[str, str] | None = None,
        max_bytes: int,
        source_path: str | None = None,
    ) -> None:
        self.path = path
        self.format = _detect_format(path, fmt)
        self.fields = dict(fields or {})
        self.max_bytes = max_bytes
        self.source_path = source_path if source_path is not None else str(path)
        self._raw: IO[bytes] | None = None
        self._stream: IO[bytes] | None = None
        self._compressed = False
        self._size = 0
        self._line = 0
        self._offset = 0
        self._row = 0
        self._csv_columns: dict[str, int] = {}
        self._csv_width = 0
        self._resume: dict[str, Any] = {}

    # -- RecordReader ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "kind": "file",
            "path": str(self.path),
            "format": self.format,
            "fields": dict(sorted(self.fields.items())),
        }

    @property
    def progress_total(self) -> int | None:
        return self._size or None

    def progress_done(self) -> int:
        if self._raw is None:
            return 0
        if not self._compressed and self.format == "jsonl":
            return self._offset
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def position(self) -> dict[str, Any]:
        if self.format == "csv":
            return {"line": self._line, "row": self._row}
        return {"line": self._line, "offset": self._offset}

    async def open(self, resume: Mapping[str, Any] | None) -> None:
        path = self.path
        try:
            if not path.is_file():
                raise DataError("input file %s does not exist or is not a regular file" % path)
            raw = path.open("rb")
        except OSError as exc:
            raise DataError("cannot read input file %s: %s" % (path, exc.strerror or exc)) from None
        try:
            self._size = path.stat().st_size
            magic = raw.read(2)
            raw.seek(0)
            self._compressed = magic == _GZIP_MAGIC
            stream: IO[bytes] = (
                cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if self._compressed else raw
            )
        except OSError as exc:
            raw.close()
            raise DataError("cannot read input file %s: %s" % (path, exc)) from None
        self._raw, self._stream = raw, stream
        self._resume = dict(resume or {})
        if self.format == "jsonl" and self._resume:
            try:
                self._line = int(self._resume["line"])
                self._offset = int(self._resume["offset"])
                stream.seek(self._offset)  # gzip: decompresses forward to the offset
            except (KeyError, TypeError, ValueError, OSError, EOFError) as exc:
                raise DataError("cannot resume %s at %s: %s" % (path, self._resume, exc)) from None

    async def close(self) -> None:
        stream, raw = self._stream, self._raw
        self._stream = self._raw = None
        if stream is not None and stream is not raw:
            stream.close()
        if raw is not None:
            raw.close()

    async def records(self) -> AsyncGenerator[RawRecord, None]:
        iterator = self._jsonl() if self.format == "jsonl" else self._csv()
        try:
            for record in iterator:
                yield record
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError("reading %s failed near line %d: %s" % (self.path, self._line + 1, exc)) from None

    # -- JSONL ----------------------------------------------------------------------------
    def _source(self, line: int) -> FileSource:
        return FileSource(path=self.source_path, line=line)

    def _jsonl(self) -> Iterator[RawRecord]:
        stream = self._stream
        if stream is None:
            raise RuntimeError("FileReader.open() was not called")
        limit = self.max_bytes
        while True:
            # Read at most limit + 2 bytes (the line plus "\r\n"): a longer line is oversize and
            # is skipped in chunks instead of being read whole.
            line = stream.readline(limit + 2)
            if not line:
                return
            consumed = len(line)
            oversize = not line.endswith(b"\n") and len(line) == limit + 2
            if oversize:
                while True:
                    chunk = stream.readline(_SKIP_CHUNK)
                    consumed += len(chunk)
                    if not chunk or chunk.endswith(b"\n"):
                        break
            self._line += 1
            self._offset += consumed
            if oversize:
                yield RawRecord(
                    source=self._source(self._line),
                    error=InvalidArticleError(
                        "oversize", "line is %d bytes, over the limit of %d bytes" % (consumed, limit)
                    ),
                )
                continue
            value = line.rstrip(b"\r\n")
            if not value.strip():
                continue  # blank lines separate nothing in JSONL; skipping them is not an error
            if self.fields:
                value = self._remap_json(value)
            yield RawRecord(source=self._source(self._line), value=value)

    def _remap_json(self, value: bytes) -> bytes:
        try:
            obj = json.loads(value)
        except (ValueError, RecursionError):
            return value  # decode_article reports the JSON error precisely
        if not isinstance(obj, dict):
            return value
        return json.dumps(_remap(obj, self.fields), ensure_ascii=False).encode("utf-8")

    # -- CSV ------------------------------------------------------------------------------
    def _csv(self) -> Iterator[RawRecord]:
        stream = self._stream
        if stream is None:
            raise RuntimeError("FileReader.open() was not called")
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")
        delimiter = "\t" if self.path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
        # The real bound is max_bytes per record, checked below; the csv module's own limit
        # (128 KiB by default) would abort the whole file on one long field instead.
        csv.field_size_limit(max(self.max_bytes * 4, 1 << 20))
        reader = csv.reader(text, delimiter=delimiter)
        try:
            try:
                header = next(reader)
            except StopIteration:
                return
            self._bind_header(header)
            skip_rows = int(self._resume.get("row", 0))
            line_before = reader.line_num
            for row in reader:
                line = line_before + 1
                line_before = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                self._row += 1
                self._line = reader.line_num
                if self._row <= skip_rows:
                    continue
                yield self._csv_record(row, line)
        except UnicodeDecodeError as exc:
            raise DataError(
                "input %s is not valid UTF-8 near line %d: %s" % (self.path, reader.line_num + 1, exc.reason)
            ) from None
        except csv.Error as exc:
            raise DataError(
                "input %s is not valid CSV near line %d: %s" % (self.path, reader.line_num, exc)
            ) from None
        finally:
            text.detach()

    def _bind_header(self, header: list[str]) -> None:
        names = [name.strip() for name in header]
        index = {name: i for i, name in enumerate(names)}
        for field, column in self.fields.items():
            if column not in index:
                raise ConfigError(
                    "--field %s=%s: %s has no column %r (columns: %s)"
                    % (field, column, self.path, column, ", ".join(names))
                )
        missing = [f for f in _REQUIRED_FIELDS if self.fields.get(f, f) not in index]
        if missing:
            raise ConfigError(
                "%s has no column for %s (columns: %s); map one with --field %s=COLUMN"
                % (self.path, ", ".join(missing), ", ".join(names), missing[0])
            )
        self._csv_columns = {
            field: index[self.fields.get(field, field)]
            for field in ARTICLE_FIELDS
            if self.fields.get(field, field) in index
        }
        self._csv_width = len(names)

    def _csv_record(self, row: list[str], line: int) -> RawRecord:
        source = self._source(line)
        if len(row) != self._csv_width:
            return RawRecord(
                source=source,
                error=InvalidArticleError(
                    "schema", "row has %d columns, the header has %d" % (len(row), self._csv_width)
                ),
            )
        size = sum(len(cell) for cell in row)
        if size > self.max_bytes:
            return RawRecord(
                source=source,
                error=InvalidArticleError(
                    "oversize", "row is %d characters, over the limit of %d bytes" % (size, self.max_bytes)
                ),
            )
        obj: dict[str, str] = {}
        for field, i in self._csv_columns.items():
            cell = row[i]
            # CSV has no null: an empty optional cell means "absent", not "empty string".
            if cell == "" and field not in _REQUIRED_FIELDS:
                continue
            obj[field] = cell
        return RawRecord(source=source, value=json.dumps(obj, ensure_ascii=False).encode("utf-8"))
