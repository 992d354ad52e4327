"""Shared plumbing of bench/pipeline.py and its worker scripts: articles, topics, probes, processes.

Nothing here measures anything; it only sets up backlogs, reads timestamps back and runs the
processes under test. Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVICES_SH = REPO / "deploy" / "local" / "services.sh"
ARTICLE_FIELDS = ("id", "title", "text", "publication", "url")


def data_path() -> Path:
    root = os.environ.get("NEWSMTL_DATA_DIR")
    base = Path(root) if root else REPO.parent / "shared" / "data"
    return base / "allsides-article-bias" / "articles.jsonl.gz"


def load_articles(count: int) -> list[dict[str, Any]]:
    """The first ``count`` allsides articles, reduced to the input fields of an Article."""
    path = data_path()
    if not path.is_file():
        raise SystemExit("the allsides data is missing at %s (set NEWSMTL_DATA_DIR)" % path)
    rows: list[dict[str, Any]] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            rows.append({name: row[name] for name in ARTICLE_FIELDS if row.get(name) is not None})
            if len(rows) >= count:
                break
    if len(rows) < count:
        raise SystemExit("asked for %d articles but %s holds only %d" % (count, path, len(rows)))
    return rows


def to_messages(rows: Iterable[dict[str, Any]], *, suffix: str = "") -> list[tuple[bytes, bytes]]:
    """``(key, value)`` messages keyed by article id (``suffix`` makes ids unique per phase)."""
    out = []
    for row in rows:
        article = dict(row, id=row["id"] + suffix) if suffix else row
        out.append((article["id"].encode(), json.dumps(article).encode()))
    return out


def fresh(prefix: str) -> str:
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


@dataclass(frozen=True)
class Names:
    """Fresh topics, group and Redis prefix of one measurement."""

    input: str
    topics: str
    styles: str
    dlq: str
    group: str
    redis_prefix: str

    @classmethod
    def new(cls, label: str) -> Names:
        tag = fresh("bench-" + label)
        return cls(
            input=tag + "-in",
            topics=tag + "-topics",
            styles=tag + "-styles",
            dlq=tag + "-dlq",
            group=tag + "-group",
            redis_prefix=tag + ":",
        )

    def all_topics(self) -> list[str]:
        return [self.input, self.topics, self.styles, self.dlq]

    def env(self, *, bootstrap: str, redis_url: str, bundle: Path) -> dict[str, str]:
        """The NEWSMTL_* environment of a service process on these names."""
        return {
            "NEWSMTL_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "NEWSMTL_KAFKA__GROUP_ID": self.group,
            "NEWSMTL_TOPICS__INPUT": self.input,
            "NEWSMTL_TOPICS__TOPICS": self.topics,
            "NEWSMTL_TOPICS__STYLES": self.styles,
            "NEWSMTL_TOPICS__DLQ": self.dlq,
            "NEWSMTL_REDIS__URL": redis_url,
            "NEWSMTL_REDIS__KEY_PREFIX": self.redis_prefix,
            # Benchmark results need not outlive the benchmark by a week.
            "NEWSMTL_REDIS__TTL_SECONDS": "3600",
            "NEWSMTL_HTTP__HOST": "127.0.0.1",
            "NEWSMTL_HTTP__PORT": "0",
            "NEWSMTL_MODEL__BUNDLE_PATH": str(bundle),
            "NEWSMTL_SERVICE__LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
        }


# ----------------------------------------------------------------------------- Kafka


async def create_topics(
    bootstrap: str, names: Sequence[str], *, partitions: int, limit_s: float = 60
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names], timeout_ms=int(limit_s * 1000))
        deadline = time.monotonic() + limit_s
        while True:
            described = await admin.describe_topics(list(names))
            if all(
                d["error_code"] == 0
                and len(d["partitions"]) == partitions
                and all(p["leader"] >= 0 for p in d["partitions"])
                for d in described
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("topics %s did not get leaders within %.0f s" % (names, limit_s))
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(names), timeout_ms=30_000)
    except Exception as exc:  # noqa: BLE001 - cleanup only
        print("  (could not delete topics: %s)" % exc, file=sys.stderr)
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
    """Produce a backlog (acks=all) and wait until every message is acknowledged."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=1_048_576,
        max_request_size=4_194_304,
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class Probe:
    """One long-lived consumer (no group) for cheap questions: partition ends, committed offsets."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: Any = None

    async def __aenter__(self) -> Probe:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def partitions(self, topic: str) -> list[Any]:
        from aiokafka import TopicPartition

        deadline = time.monotonic() + 30
        while True:
            found = self._consumer.partitions_for_topic(topic)
            if found:
                return [TopicPartition(topic, p) for p in sorted(found)]
            if time.monotonic() > deadline:
                raise TimeoutError("no metadata for topic %s" % topic)
            await self._consumer._client.force_metadata_update()  # noqa: SLF001 - a new topic
            await asyncio.sleep(0.1)

    async def count(self, topic: str) -> int:
        ends = await self._consumer.end_offsets(await self.partitions(topic))
        return int(sum(ends.values()))

    async def wait_count(self, topic: str, target: int, *, limit_s: float, proc: Proc | None = None) -> None:
        deadline = time.monotonic() + limit_s
        while True:
            if await self.count(topic) >= target:
                return
            if proc is not None and proc.returncode is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (proc.name, proc.returncode, proc.tail()))
            if time.monotonic() > deadline:
                detail = ("\n" + proc.tail()) if proc is not None else ""
                raise TimeoutError(
                    "%s did not reach %d records within %.0f s%s" % (topic, target, limit_s, detail)
                )
            await asyncio.sleep(0.25)


async def read_stamps(bootstrap: str, topic: str, *, limit_s: float = 300) -> dict[bytes, list[int]]:
    """Every record's key -> its timestamps (ms), read from the beginning to the current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 * 1_048_576
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - topics created after start
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        stamps: dict[bytes, list[int]] = {}
        deadline = time.monotonic() + limit_s
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            if time.monotonic() > deadline:
                raise TimeoutError("reading %s took over %.0f s" % (topic, limit_s))
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for record in records:
                    stamps.setdefault(record.key, []).append(record.timestamp)
        return stamps
    finally:
        await consumer.stop()


# ----------------------------------------------------------------------------- processes

_PORT_LINE = re.compile(rb"health and metrics on http://[^:]+:(\d+)")


@dataclass
class Proc:
    """A child process whose output is kept (the last lines) and scanned for the health port."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    port: int | None = None
    lines: deque[bytes] = field(default_factory=lambda: deque(maxlen=300))
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> Proc:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=str(REPO),
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line)
            match = _PORT_LINE.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def tail(self, count: int = 40) -> str:
        return b"".join(list(self.lines)[-count:]).decode("utf-8", "replace")

    async def wait_ready(self, *, limit_s: float = 180) -> float:
        """Poll /readyz until 200 (partitions assigned, Kafka and Redis answering); return the time."""
        import aiohttp

        deadline = time.monotonic() + limit_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            while True:
                if self.returncode is not None:
                    raise RuntimeError("%s exited with %s:\n%s" % (self.name, self.returncode, self.tail()))
                if self.port is not None:
                    try:
                        async with session.get("http://127.0.0.1:%d/readyz" % self.port) as response:
                            if response.status == 200:
                                return time.time()
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        "%s was not ready within %.0f s:\n%s" % (self.name, limit_s, self.tail())
                    )
                await asyncio.sleep(0.05)

    async def wait(self, *, limit_s: float) -> int:
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), limit_s)
        except TimeoutError:
            raise TimeoutError(
                "%s did not exit within %.0f s:\n%s" % (self.name, limit_s, self.tail())
            ) from None
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self, *, limit_s: float = 60) -> int:
        """SIGTERM (graceful drain), then wait; SIGKILL if it hangs."""
        if self.process is None or self.process.returncode is not None:
            return self.returncode or 0
        self.process.terminate()
        try:
            return await self.wait(limit_s=limit_s)
        except TimeoutError:
            self.process.kill()
            return await self.wait(limit_s=30)


def python_argv(script: str) -> list[str]:
    return [sys.executable, str(REPO / "bench" / script)]


def newsmtl_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", "from newsmtl.cli import run; run()", *args]
