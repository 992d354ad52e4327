"""Fixtures of the fault-injection suite and its summary table.

Sizes and knobs (environment):

``NEWSMTL_FAULTS_N``        real articles streamed per scenario (default 1,500; the issue's full
                            size is 10,000: ``NEWSMTL_FAULTS_N=10000 pytest -m faults``)
``NEWSMTL_FAULTS_SEED``     seed of the kill points and of the poison shuffle (default 20261204)
``NEWSMTL_FAULTS_BUNDLE``   model bundle to serve (default: the ``tiny_bundle`` fixture)
``NEWSMTL_FAULTS_RESULTS``  where the summary JSON goes (default ``bench/results/faults-<date>.json``)

Every scenario records one row (scenario, messages, lost, duplicated, recovery time); the rows are
printed as a table at the end of the run and written to the JSON file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults._harness import Audit, DedicatedRedis, new_stream
from tests.fixtures.kafka_utils import delete_topics
from tests.fixtures.services import Endpoints, LocalServices
from tests.service._helpers import Stream

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_N = 1_500
DEFAULT_SEED = 20261204

_ROWS = pytest.StashKey[list[dict[str, Any]]]()


def faults_n() -> int:
    raw = os.environ.get("NEWSMTL_FAULTS_N", str(DEFAULT_N))
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError("NEWSMTL_FAULTS_N must be an integer, not %r" % raw) from None
    if not 100 <= value <= 30_000:
        raise pytest.UsageError("NEWSMTL_FAULTS_N must be between 100 and 30000, not %d" % value)
    return value


def faults_seed() -> int:
    raw = os.environ.get("NEWSMTL_FAULTS_SEED", str(DEFAULT_SEED))
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError("NEWSMTL_FAULTS_SEED must be an integer, not %r" % raw) from None


def scenario_timeout() -> int:
    """Per-test timeout: fixed costs (process and broker restarts) plus time per article."""
    return int(420 + faults_n() * 0.12)


@pytest.fixture(scope="session")
def n_articles() -> int:
    return faults_n()


@pytest.fixture(scope="session")
def seed() -> int:
    return faults_seed()


@pytest.fixture(scope="session")
def bundle(request: pytest.FixtureRequest) -> Path:
    """The model bundle the service runs: ``NEWSMTL_FAULTS_BUNDLE`` or the trained tiny bundle."""
    override = os.environ.get("NEWSMTL_FAULTS_BUNDLE")
    if override:
        path = Path(override)
        if not (path / "manifest.json").is_file():
            raise pytest.UsageError("NEWSMTL_FAULTS_BUNDLE=%s is not a model bundle directory" % path)
        return path
    tiny = request.getfixturevalue("tiny_bundle")
    return Path(getattr(tiny, "path", tiny))


class Recorder:
    """Collects one scenario's audit row, stamped with how long the scenario took."""

    def __init__(self, rows: list[dict[str, Any]], nodeid: str) -> None:
        self._rows = rows
        self._nodeid = nodeid
        self._started = time.monotonic()

    def record(self, audit: Audit) -> None:
        row = audit.row()
        row["test"] = self._nodeid
        row["seconds"] = round(time.monotonic() - self._started, 1)
        self._rows.append(row)


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Recorder:
    rows = request.config.stash.setdefault(_ROWS, [])
    return Recorder(rows, request.node.nodeid)


@pytest.fixture
async def fault_stream() -> AsyncIterator[Callable[..., Awaitable[Stream]]]:
    """``await fault_stream(bootstrap, partitions=3)``: fresh topics, deleted again afterwards."""
    made: list[tuple[str, Stream]] = []

    async def make(bootstrap: str, *, partitions: int = 3) -> Stream:
        stream = await new_stream(bootstrap, partitions=partitions)
        made.append((bootstrap, stream))
        return stream

    yield make
    for bootstrap, stream in made:
        try:
            await delete_topics(
                bootstrap, [stream.input, stream.topics, stream.styles, stream.dlq], timeout=10
            )
        except Exception as exc:  # noqa: BLE001 - cleanup must not mask the scenario's own result
            logger.warning("could not delete the topics of %s: %s", stream.input, exc)


@pytest.fixture
def dedicated_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServices, Endpoints]]:
    """A private Kafka broker (and Redis) from ``deploy/local/services.sh``, killable at will."""
    # A short path: the broker's data dir and the work dir end up in command lines and logs.
    services = LocalServices(tmp_path_factory.mktemp("fault-svc"), timeout=300)
    endpoints = services.start()
    try:
        yield services, endpoints
    finally:
        services.clean()


@pytest.fixture
async def dedicated_redis(tmp_path: Path) -> AsyncIterator[DedicatedRedis]:
    server = DedicatedRedis(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        await asyncio.to_thread(server.kill)


# ----------------------------------------------------------------------------- summary


def _results_path() -> Path:
    override = os.environ.get("NEWSMTL_FAULTS_RESULTS")
    if override:
        return Path(override)
    return REPO_ROOT / "bench" / "results" / ("faults-%s.json" % datetime.now(UTC).strftime("%Y-%m-%d"))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.1f" % value
    return str(value)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    header = ("scenario", "messages", "lost", "duplicated", "recovery_s", "seconds")
    table = [header] + [tuple(_fmt(row[name]) for name in header) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    terminalreporter.section("fault-injection summary (N=%d, seed=%d)" % (faults_n(), faults_seed()))
    for i, line in enumerate(table):
        terminalreporter.write_line(
            "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if i == 0:
            terminalreporter.write_line("  ".join("-" * w for w in widths))
    path = _results_path()
    document = {
        "kind": "newsmtl-faults/1",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "n_articles": faults_n(),
        "seed": faults_seed(),
        "exit_status": int(exitstatus),
        "total_seconds": round(sum(row["seconds"] for row in rows), 1),
        "scenarios": rows,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    except OSError as exc:
        terminalreporter.write_line("could not write %s: %s" % (path, exc))
        return
    terminalreporter.write_line("written to %s" % path)
