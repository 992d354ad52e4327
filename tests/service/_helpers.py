"""Helpers of the streaming-service tests: real articles, poison messages, a `newsmtl serve`
subprocess, and readers that check what landed in Kafka and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord
from redis import exceptions as redis_errors

from newsmtl.schemas import ClassificationResult, StyleResult, TopicResult
from tests.export._helpers import read_articles
from tests.fixtures.kafka_utils import poll_until, topic_partitions

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]

# Fields of the corpus that make up an input Article (the labels stay out of the message).
_ARTICLE_FIELDS = ("id", "title", "text", "publication", "url")


@dataclass(frozen=True)
class Stream:
    """Fresh names for one test: the four topics, the consumer group and the Redis key prefix."""

    input: str
    topics: str
    styles: str
    dlq: str
    group: str
    redis_prefix: str

    def settings_overrides(self) -> dict[str, Any]:
        return {
            "topics": {"input": self.input, "topics": self.topics, "styles": self.styles, "dlq": self.dlq},
            "kafka": {"group_id": self.group},
            "redis": {"key_prefix": self.redis_prefix},
        }

    def command_line(
        self, *, bundle: Path, bootstrap: str, redis_url: str, extra: Sequence[str] = (), command: str = "serve"
    ) -> list[str]:
        """The arguments of ``newsmtl <command>`` on this stream (health server on a free port)."""
        return [
            command,
            "--bundle",
            str(bundle),
            "--bootstrap-servers",
            bootstrap,
            "--redis-url",
            redis_url,
            "--group-id",
            self.group,
            "--input-topic",
            self.input,
            "--topics-topic",
            self.topics,
            "--styles-topic",
            self.styles,
            "--dlq-topic",
            self.dlq,
            "--http-port",
            "0",
            *extra,
        ]


def article_messages(count: int, *, skip: int = 0) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` messages of real articles from ../shared/data (key = article id)."""
    messages = []
    for row in read_articles(count, skip=skip):
        article = {name: row[name] for name in _ARTICLE_FIELDS if row.get(name) is not None}
        messages.append((article["id"].encode(), json.dumps(article).encode()))
    return messages


def poison_messages(count: int, *, oversize_bytes: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """``count`` unusable messages cycling through 16 kinds: ``(kind, key, value)``.

    ``oversize_bytes`` is one more than the service's ``batching.max_message_bytes``.
    """
    good = {"id": "x", "title": "A title", "text": "Some body text."}

    def obj(**changes: Any) -> bytes:
        data: dict[str, Any] = {**good, **changes}
        return json.dumps({k: v for k, v in data.items() if v is not _DROP}).encode()

    kinds: list[tuple[str, bytes | None]] = [
        ("empty", b""),
        ("tombstone", None),
        ("oversize_message", obj(text="a" * oversize_bytes)),
        ("invalid_utf8", b'{"id": "\xff\xfe", "title": "", "text": "x"}'),
        ("truncated_json", b'{"id": "a1", "title": "t", "text": "bo'),
        ("json_array", b'[{"id": "a", "title": "t", "text": "x"}]'),
        ("json_string", b'"just a string"'),
        ("missing_id", obj(id=_DROP)),
        ("missing_text", obj(text=_DROP)),
        ("numeric_id", obj(id=12345)),
        ("blank_text", obj(text="   \n\t ")),
        ("padded_id", obj(id=" spaced ")),
        ("bad_language", obj(language="english please")),
        ("bad_published_at", obj(published_at="yesterday-ish")),
        ("title_too_long", obj(title="t" * 2_001)),
        ("deeply_nested", b"[" * 20_000 + b"]" * 20_000),
    ]
    out = []
    for i in range(count):
        kind, value = kinds[i % len(kinds)]
        out.append((kind, ("poison-%d" % i).encode(), value))
    return out


_DROP = object()


async def read_topic(
    bootstrap: str, topic: str, *, isolation_level: str = "read_uncommitted", timeout: float = 60.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning up to its current end (LSO when read_committed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level, group_id=None
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first look at a new topic
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while True:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                return records
            if time.monotonic() > deadline:
                raise TimeoutError("reading %s to its end took over %.0fs" % (topic, timeout))
            batch = await consumer.getmany(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, *, isolation_level: str) -> dict[TopicPartition, int]:
    """The end of every partition: the high watermark, or the last stable offset when read_committed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await _partitions(bootstrap, topic)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    described = await topic_partitions(bootstrap, topic)
    if not described:
        raise RuntimeError("topic %s has no partitions (does it exist?)" % topic)
    return [p["partition"] for p in described]


async def wait_for_keys(
    bootstrap: str,
    topic: str,
    keys: set[bytes],
    *,
    timeout: float,
    isolation_level: str = "read_uncommitted",
    minimum: int | None = None,
) -> list[ConsumerRecord]:
    """Poll ``topic`` until ``minimum`` (default: all) of ``keys`` appear; return what was read."""
    wanted = len(keys) if minimum is None else minimum
    deadline = time.monotonic() + timeout
    while True:
        records = await read_topic(bootstrap, topic, isolation_level=isolation_level, timeout=timeout)
        seen = {r.key for r in records} & keys
        if len(seen) >= wanted:
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(
                "only %d of %d wanted keys reached %s within %.0fs" % (len(seen), wanted, topic, timeout)
            )
        await asyncio.sleep(0.5)


def decode_topic_results(records: Sequence[ConsumerRecord]) -> list[TopicResult]:
    return [TopicResult.model_validate_json(r.value) for r in records]


def decode_style_results(records: Sequence[ConsumerRecord]) -> list[StyleResult]:
    return [StyleResult.model_validate_json(r.value) for r in records]


async def redis_results(client: Any, prefix: str, ids: Sequence[str]) -> dict[str, ClassificationResult]:
    """The stored result of every id that has one."""
    keys = ["%sarticle:%s" % (prefix, i) for i in ids]
    values = await client.mget(keys)
    return {
        article_id: ClassificationResult.model_validate_json(value)
        for article_id, value in zip(ids, values, strict=True)
        if value is not None
    }


async def http_get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get("http://127.0.0.1:%d%s" % (port, path)) as response,
    ):
        return response.status, await response.text()


async def wait_ready(port: int, *, timeout: float) -> dict[str, Any]:
    """Poll ``/readyz`` until it answers 200; return its body."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = await http_get(port, "/readyz")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = repr(exc)
        else:
            if status == 200:
                return dict(json.loads(body))
            last = body
        await asyncio.sleep(0.2)
    raise TimeoutError("the service did not become ready within %.0fs: %s" % (timeout, last))


async def unless_ended(awaitable: Awaitable[T], watched: asyncio.Future[Any], why: Callable[[], str]) -> T:
    """Await ``awaitable`` but fail at once when ``watched`` (a service run, a process) ends first."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task, watched}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    detail = ""
    if not watched.cancelled() and watched.exception() is not None:
        detail = " (%r)" % watched.exception()
    raise AssertionError(why() + detail)


async def committed_offsets(bootstrap: str, group: str) -> int:
    """The sum over partitions of the group's committed offsets (0 when nothing is committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(max(0, meta.offset) for meta in offsets.values())


@dataclass
class PrivateRedis:
    """A redis-server of one test (no persistence), to take away and bring back on the same port."""

    port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    async def start(self, *, timeout: float = 30.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.from_url(self.url)
        try:
            await poll_until(
                lambda: _ping(client), timeout=timeout, what="redis-server on port %d" % self.port
            )
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


async def _ping(client: Any) -> bool:
    try:
        return bool(await client.ping())
    except (redis_errors.ConnectionError, redis_errors.TimeoutError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PORT_LINE = re.compile(rb"health and metrics on http://[^:]+:(\d+)")


@dataclass
class ServeProcess:
    """``newsmtl serve`` (or ``faust-worker``) as a child process, with its log kept for reports."""

    args: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    log: list[bytes] = field(default_factory=list)
    port: int | None = None
    _reader: asyncio.Task[None] | None = None
    _port_seen: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> ServeProcess:
        env = {**os.environ, **self.env}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from newsmtl.cli import run; run()",
            *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=str(REPO_ROOT),
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            self.log.append(line)
            match = _PORT_LINE.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._port_seen.set()

    def tail(self, lines: int = 60) -> str:
        return b"".join(self.log[-lines:]).decode("utf-8", "replace")

    async def wait_ready(self, *, timeout: float = 120.0) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self._port_seen.wait(), timeout)
        except TimeoutError:
            raise TimeoutError("no health server line in the service log:\n" + self.tail()) from None
        assert self.port is not None
        try:
            return await wait_ready(self.port, timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError("%s\n%s" % (exc, self.tail())) from None

    async def guard(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, failing at once (with the log) if the process exits first."""
        assert self.process is not None
        process = self.process
        exited = asyncio.ensure_future(process.wait())
        try:
            return await unless_ended(
                awaitable,
                exited,
                lambda: "the service exited with %s:\n%s" % (process.returncode, self.tail()),
            )
        finally:
            exited.cancel()

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, *, timeout: float) -> int:
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                "the service did not exit within %.0fs:\n%s" % (timeout, self.tail())
            ) from None
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader
