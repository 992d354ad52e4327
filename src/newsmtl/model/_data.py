"""Datasets: loading with a field mapping, deterministic stratified splits, label maps.

This module is torch-free (the TF-IDF baseline and the analysis tools use it too).

Any JSON Lines (``.jsonl``, ``.jsonl.gz``), JSON array (``.json``) or CSV (``.csv``, ``.csv.gz``)
file works. Each example needs a body text, a topic label and a publication; title and bias are
optional. The *logical* fields map to columns of the file, by default::

    title -> title, text -> text, topic -> topic_coarse (the label field), publication -> publication,
    bias -> bias_text if the file has it, else bias, id -> id (row number when absent)

and ``--field text=body --field topic=category`` overrides single entries.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from newsmtl._errors import ConfigError, DataError
from newsmtl.text import normalize_publication

__all__ = [
    "LOGICAL_FIELDS",
    "DataSplit",
    "Example",
    "default_data_path",
    "load_examples",
    "parse_field_overrides",
    "resolve_fields",
    "select_publications",
    "split_examples",
    "split_fingerprint",
    "subsample",
]

logger = logging.getLogger(__name__)

LOGICAL_FIELDS = ("id", "title", "text", "topic", "publication", "bias")
_REQUIRED = ("text", "topic", "publication")
_BIAS_CANDIDATES = ("bias_text", "bias")


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled article; ``publication`` is normalised (``None`` when blank)."""

    id: str
    title: str
    text: str
    topic: str
    publication: str | None
    bias: str | None


@dataclass(frozen=True)
class DataSplit:
    """Indices into the example list, each sorted ascending."""

    train: list[int]
    dev: list[int]
    test: list[int]

    def get(self, name: str) -> list[int]:
        if name == "all":
            return sorted(self.train + self.dev + self.test)
        if name not in ("train", "dev", "test"):
            raise ConfigError("unknown split %r (choose train, dev, test or all)" % name)
        return list(getattr(self, name))

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def default_data_path() -> Path:
    """``$NEWSMTL_DATA_DIR/allsides-article-bias/articles.jsonl.gz`` (default ``../shared/data``)."""
    import os

    root = os.environ.get("NEWSMTL_DATA_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return base / "allsides-article-bias" / "articles.jsonl.gz"


def parse_field_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["text=body", "topic=category"]`` -> ``{"text": "body", "topic": "category"}``."""
    out: dict[str, str] = {}
    for item in items:
        logical, sep, column = item.partition("=")
        logical, column = logical.strip(), column.strip()
        if not sep or not logical or not column:
            raise ConfigError("--field expects LOGICAL=COLUMN (e.g. text=body), got %r" % item)
        if logical not in LOGICAL_FIELDS:
            raise ConfigError("unknown logical field %r in --field (choose from %s)" % (logical, ", ".join(LOGICAL_FIELDS)))
        out[logical] = column
    return out


def resolve_fields(overrides: Mapping[str, str] | None = None, *, label_field: str = "topic_coarse") -> dict[str, str]:
    """The full logical -> column mapping; ``bias`` may be ``"?"`` (pick the first present)."""
    fields = {"id": "id", "title": "title", "text": "text", "topic": label_field, "publication": "publication", "bias": "?"}
    for key, value in (overrides or {}).items():
        if key not in LOGICAL_FIELDS:
            raise ConfigError("unknown logical field %r (choose from %s)" % (key, ", ".join(LOGICAL_FIELDS)))
        fields[key] = value
    return fields


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _iter_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    name = path.name.lower().removesuffix(".gz")
    try:
        with _open_text(path) as fh:
            if name.endswith((".jsonl", ".ndjson")):
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError as exc:
                        raise DataError("%s line %d: invalid JSON (%s)" % (path, lineno, exc)) from None
                    if not isinstance(row, dict):
                        raise DataError("%s line %d: expected a JSON object" % (path, lineno))
                    yield lineno, row
            elif name.endswith(".json"):
                try:
                    rows = json.load(fh)
                except ValueError as exc:
                    raise DataError("%s: invalid JSON (%s)" % (path, exc)) from None
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise DataError("%s: a .json dataset must be an array of objects" % path)
                yield from enumerate(rows, start=1)
            elif name.endswith(".csv"):
                csv.field_size_limit(1 << 30)
                reader = csv.DictReader(fh)
                for rowno, row in enumerate(reader, start=2):  # line 1 is the header
                    yield rowno, row
            else:
                raise DataError("%s: unsupported dataset format (use .jsonl, .jsonl.gz, .json, .csv or .csv.gz)" % path)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        raise DataError("cannot read %s: %s" % (path, exc)) from None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def load_examples(path: Path, *, fields: Mapping[str, str] | None = None, label_field: str = "topic_coarse") -> list[Example]:
    """Read every usable example of ``path`` in file order.

    Raises :class:`DataError` naming the file, the row and the missing column when a required
    field (text, topic, publication) is absent, or when the file yields no examples. Rows whose
    title and text are both blank are skipped (and counted in the log).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("dataset not found: %s" % path)
    mapping = resolve_fields(fields, label_field=label_field)
    examples: list[Example] = []
    skipped = 0
    bias_column: str | None = None if mapping["bias"] == "?" else mapping["bias"]
    bias_checked = False
    for rowno, row in _iter_rows(path):
        if not bias_checked:
            if bias_column is None:
                bias_column = next((c for c in _BIAS_CANDIDATES if c in row), None)
            elif bias_column not in row:
                raise DataError(
                    "%s row %d: bias column %r is missing (columns: %s)" % (path, rowno, bias_column, _columns(row))
                )
            bias_checked = True
        for logical in _REQUIRED:
            column = mapping[logical]
            if column not in row:
                raise DataError(
                    "%s row %d: required field %r (column %r) is missing; columns are %s. "
                    "Map it with --field %s=COLUMN" % (path, rowno, logical, column, _columns(row), logical)
                )
        title = _text(row.get(mapping["title"]))
        text = _text(row[mapping["text"]])
        if not title.strip() and not text.strip():
            skipped += 1
            continue
        topic = _text(row[mapping["topic"]]).strip()
        if not topic:
            raise DataError("%s row %d: empty topic label in column %r" % (path, rowno, mapping["topic"]))
        bias = _text(row.get(bias_column)).strip() if bias_column else ""
        raw_id = _text(row.get(mapping["id"])).strip()
        examples.append(
            Example(
                id=raw_id or "row-%d" % rowno,
                title=title,
                text=text,
                topic=topic,
                publication=normalize_publication(_text(row[mapping["publication"]])),
                bias=bias or None,
            )
        )
    if skipped:
        logger.warning("%s: skipped %d rows with neither title nor text", path, skipped)
    if not examples:
        raise DataError("%s holds no usable examples" % path)
    return examples


def _columns(row: Mapping[str, Any]) -> str:
    cols = sorted(str(c) for c in row)
    return ", ".join(cols[:20]) + (", ..." if len(cols) > 20 else "")


def subsample(n_total: int, n: int | None, *, seed: int) -> list[int]:
    """Sorted indices of a seeded random subset of size ``n`` (all indices when ``n`` is None)."""
    if n is None or n >= n_total:
        return list(range(n_total))
    if n < 1:
        raise ConfigError("max_articles must be positive")
    rng = np.random.default_rng([seed, 0x5B5A])
    return sorted(int(i) for i in rng.choice(n_total, size=n, replace=False))


def split_examples(
    examples: Sequence[Example], *, seed: int, dev_fraction: float = 0.1, test_fraction: float = 0.1
) -> DataSplit:
    """Deterministic train/dev/test split, stratified by publication.

    Within each publication (blank publications form one group) the examples are shuffled with
    a generator seeded by ``(seed, crc32(publication))`` and the first ``round(n * test_fraction)``
    go to test, the next ``round(n * dev_fraction)`` to dev, the rest to train. Every outlet thus
    keeps its share in every split, and a group's assignment does not depend on other groups.
    """
    if not (0 <= dev_fraction < 1 and 0 <= test_fraction < 1 and dev_fraction + test_fraction < 1):
        raise ConfigError("dev_fraction and test_fraction must be in [0, 1) and sum to less than 1")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.publication or ""].append(i)
    train: list[int] = []
    dev: list[int] = []
    test: list[int] = []
    for pub in sorted(groups):
        members = np.asarray(groups[pub])
        rng = np.random.default_rng([seed, zlib.crc32(pub.encode("utf-8"))])
        order = members[rng.permutation(len(members))]
        n = len(order)
        n_test = int(np.floor(n * test_fraction + 0.5))
        n_dev = int(np.floor(n * dev_fraction + 0.5))
        if n_test + n_dev >= n:  # tiny outlets: keep at least one article to train on
            n_test, n_dev = min(n_test, max(n - 1, 0)), 0
        test.extend(int(i) for i in order[:n_test])
        dev.extend(int(i) for i in order[n_test : n_test + n_dev])
        train.extend(int(i) for i in order[n_test + n_dev :])
    return DataSplit(train=sorted(train), dev=sorted(dev), test=sorted(test))


def split_fingerprint(examples: Sequence[Example], indices: Sequence[int]) -> str:
    """sha256 over the ids (and text heads) of a split: evaluation checks it was reproduced."""
    digest = hashlib.sha256()
    for i in indices:
        ex = examples[i]
        digest.update(ex.id.encode("utf-8"))
        digest.update(b"\x1f")
        digest.update(ex.text[:64].encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def select_publications(
    examples: Sequence[Example], train: Sequence[int], *, min_articles: int,
    max_publications: int | None = None, explicit: Sequence[str] | None = None,
) -> list[str]:
    """Modelled publications: ``explicit`` if given, else outlets with >= ``min_articles``
    training articles (the ``max_publications`` most frequent), sorted by name."""
    counts = Counter(examples[i].publication for i in train if examples[i].publication)
    if explicit:
        wanted = [normalize_publication(p) for p in explicit]
        missing = [p for p in wanted if p is None or counts[p] == 0]
        if missing:
            raise DataError("modelled publications without training articles: %s" % ", ".join(map(str, missing)))
        return sorted({p for p in wanted if p})
    chosen = [(c, p) for p, c in counts.items() if p is not None and c >= min_articles]
    chosen.sort(key=lambda cp: (-cp[0], cp[1]))
    if max_publications is not None:
        chosen = chosen[:max_publications]
    if not chosen:
        top = ", ".join("%s (%d)" % (p, c) for p, c in counts.most_common(3))
        raise DataError(
            "no publication has >= %d training articles (most frequent: %s); lower "
            "min_publication_articles" % (min_articles, top or "none")
        )
    return sorted(p for _, p in chosen if p is not None)
