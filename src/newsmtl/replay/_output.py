"""Replay outputs on disk: stable JSON lines, append-only files that can be cut back, the checkpoint.

Byte-identical outputs need two things: the same records in the same order (the readers'
job) and one serialization of each record, which :func:`stable_json` is: sorted keys,
compact separators, UTF-8 text, floats as Python's shortest round-trip ``repr``.

The checkpoint is written after each flushed batch (output fsynced first, then the checkpoint
replaced atomically), so it never claims bytes the output does not hold. On resume the output
and errors files are cut back to the checkpointed lengths, which drops whatever a crash left
after the last checkpoint, and the replay continues from the checkpointed input position.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from newsmtl._errors import ConfigError, DataError

__all__ = ["CHECKPOINT_FORMAT", "AppendFile", "Checkpoint", "stable_json"]

CHECKPOINT_FORMAT = "newsmtl-replay-checkpoint/1"


def stable_json(value: BaseModel | dict[str, Any]) -> str:
    """One canonical JSON line (without the newline) for a model or a plain dict."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class AppendFile:
    """A JSON Lines file written batch by batch whose length is always known.

    ``resume_length=None`` starts the file afresh; an integer cuts an existing file back to
    that many bytes (what the checkpoint recorded) and appends after it. ``lazy`` files are
    created on the first write (an errors file that stays absent when nothing failed).
    """

    def __init__(self, path: Path, *, resume_length: int | None, lazy: bool = False) -> None:
        self.path = path
        self.length = 0
        self._fh: IO[bytes] | None = None
        try:
            if resume_length is None:
                if lazy:
                    path.unlink(missing_ok=True)  # a stale file from an earlier replay would mislead
                else:
                    self._fh = path.open("wb")
                return
            size = path.stat().st_size if path.exists() else 0
            if size < resume_length:
                raise DataError(
                    "cannot resume: %s holds %d bytes but the checkpoint recorded %d; "
                    "it was changed since, start again with --restart" % (path, size, resume_length)
                )
            if resume_length == 0 and lazy:
                path.unlink(missing_ok=True)
                return
            fh = path.open("r+b")
            fh.truncate(resume_length)
            fh.seek(resume_length)
            self._fh = fh
            self.length = resume_length
        except OSError as exc:
            raise ConfigError("cannot write %s: %s" % (path, exc.strerror or exc)) from None

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        try:
            if self._fh is None:
                self._fh = self.path.open("ab")
            self._fh.write(data)
        except OSError as exc:
            raise DataError("writing %s failed: %s" % (self.path, exc.strerror or exc)) from None
        self.length += len(data)

    def sync(self) -> None:
        """Flush and fsync: after this, :attr:`length` bytes are durable."""
        if self._fh is None:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise DataError("flushing %s failed: %s" % (self.path, exc.strerror or exc)) from None

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()


@dataclass(kw_only=True)
class Checkpoint:
    """Where a replay stands: the input position after the last flushed batch and what was written."""

    job: dict[str, Any]
    position: dict[str, Any] = field(default_factory=dict)
    output_bytes: int = 0
    errors_bytes: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"read": 0, "classified": 0, "failed": 0})
    done: bool = False

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        """The checkpoint at ``path``, or ``None`` if there is none."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError("cannot read checkpoint %s: %s" % (path, exc.strerror or exc)) from None
        try:
            data = json.loads(text)
            if data.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("format is %r, expected %r" % (data.get("format"), CHECKPOINT_FORMAT))
            return cls(
                job=dict(data["job"]),
                position=dict(data["position"]),
                output_bytes=int(data["output_bytes"]),
                errors_bytes=int(data["errors_bytes"]),
                counts={k: int(v) for k, v in data["counts"].items()},
                done=bool(data["done"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                "checkpoint %s is not a newsmtl replay checkpoint (%s); remove it or pass --restart"
                % (path, exc)
            ) from None

    def save(self, path: Path) -> None:
        """Replace the checkpoint atomically (write a temporary file, fsync, rename)."""
        data = {
            "format": CHECKPOINT_FORMAT,
            "job": self.job,
            "position": self.position,
            "output_bytes": self.output_bytes,
            "errors_bytes": self.errors_bytes,
            "counts": self.counts,
            "done": self.done,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        tmp = path.with_name(path.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                json.dump(data, fh, sort_keys=True, indent=1)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise DataError("writing checkpoint %s failed: %s" % (path, exc.strerror or exc)) from None

    def mismatches(self, job: dict[str, Any]) -> list[str]:
        """The job keys whose values differ from ``job``'s."""
        return sorted(k for k in set(self.job) | set(job) if self.job.get(k) != job.get(k))
