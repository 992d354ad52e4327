"""Helpers of the fault-injection suite: streams of real articles, a `newsmtl serve` fleet, a
dedicated Redis server to take away, and the by-id audit of what reached Kafka and Redis.

The service subprocess, the article loader, the poison kinds and the topic readers are the ones of
the service tests (:mod:`tests.service._helpers`); the broker control is
:class:`tests.fixtures.services.LocalServices`. This module only adds what a fault scenario needs
on top: progress probes, committed-offset snapshots, a Redis server this test owns, a wider
poison corpus and the audit record that ends up in the summary table.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from tests.fixtures.kafka_utils import (
    create_topics,
    poll_until,
    produce_messages,
    topic_partitions,
    unique_name,
)
from tests.service._helpers import (
    ServeProcess,
    Stream,
    end_offsets,
    http_get,
    poison_messages,
    read_topic,
    redis_results,
)

__all__ = [
    "Audit",
    "DedicatedRedis",
    "Fleet",
    "HeldStream",
    "OffsetProbe",
    "assigned_partitions",
    "audit_outputs",
    "committed_offsets",
    "first_output_after",
    "longest_gap",
    "metric_total",
    "metrics_text",
    "new_stream",
    "output_count",
    "poison_corpus",
    "reach",
    "readyz",
    "serve_args",
    "serve_env",
    "started_count",
    "wait_complete",
]

# The service's batching.max_message_bytes in the poison scenarios: above the largest real article
# (~78 KB of JSON), so every real article stays valid, yet small enough that an "oversize" poison
# message fits the test producer's default max_request_size (1 MiB).
SMALL_MAX_BYTES = 262_144


# ----------------------------------------------------------------------------- streams


async def new_stream(bootstrap: str, *, partitions: int = 3, output_partitions: int = 3) -> Stream:
    """Four fresh topics, a fresh group and a fresh Redis key prefix."""
    stream = Stream(
        input=unique_name("fault-articles"),
        topics=unique_name("fault-topics"),
        styles=unique_name("fault-styles"),
        dlq=unique_name("fault-dlq"),
        group=unique_name("fault-group"),
        redis_prefix=unique_name("fault-results") + ":",
    )
    await create_topics(bootstrap, [stream.input], partitions=partitions)
    await create_topics(bootstrap, [stream.topics, stream.styles, stream.dlq], partitions=output_partitions)
    return stream


def serve_args(
    stream: Stream, *, bundle: Path, bootstrap: str, redis_url: str, extra: Sequence[str] = ()
) -> list[str]:
    """The command line of ``newsmtl serve`` on ``stream`` (health server on a free port)."""
    return stream.command_line(bundle=bundle, bootstrap=bootstrap, redis_url=redis_url, extra=extra)


def serve_env(stream: Stream, **extra: str) -> dict[str, str]:
    """Environment of a service subprocess: settings that have no flag, text logs, fast failure detection.

    A 6 s session (the broker's minimum) instead of 45 s lets the group notice a SIGKILLed member
    within seconds; the restarted one otherwise waits for the dead one's session to expire.
    """
    env = {
        "NEWSMTL_REDIS__KEY_PREFIX": stream.redis_prefix,
        "NEWSMTL_HTTP__HOST": "127.0.0.1",
        "NEWSMTL_SERVICE__LOG_FORMAT": "text",
        "NEWSMTL_SERVICE__SHUTDOWN_GRACE_S": "30",
        # Test results need not stay in a shared Redis for the default week.
        "NEWSMTL_REDIS__TTL_SECONDS": "3600",
        "NEWSMTL_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "NEWSMTL_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "PYTHONUNBUFFERED": "1",
    }
    if os.environ.get("NEWSMTL_FAULTS_ORT_THREADS"):
        # On a small shared machine, fewer ONNX Runtime threads per process avoid oversubscription.
        env["NEWSMTL_MODEL__INTRA_OP_THREADS"] = os.environ["NEWSMTL_FAULTS_ORT_THREADS"]
    env.update(extra)
    return env


@dataclass
class Fleet:
    """The service processes of one scenario, all killed at the end whatever happened."""

    args: list[str]
    env: dict[str, str]
    members: list[ServeProcess] = field(default_factory=list)

    async def launch(self, *, ready_timeout: float = 180.0, wait: bool = True) -> ServeProcess:
        member = await ServeProcess(list(self.args), dict(self.env)).start()
        self.members.append(member)
        if wait:
            await member.wait_ready(timeout=ready_timeout)
        return member

    def logs(self, lines: int = 80) -> str:
        parts = []
        for i, member in enumerate(self.members):
            pid = member.process.pid if member.process is not None else None
            parts.append("---- member %d (pid %s) ----\n%s" % (i, pid, member.tail(lines)))
        return "\n".join(parts)

    async def close(self) -> None:
        for member in self.members:
            await member.kill()


def started_count(member: ServeProcess) -> int:
    """How many times this process logged a service start (a restart would log it again)."""
    return sum(1 for line in member.log if b"service started" in line)


# ----------------------------------------------------------------------------- probes


async def output_count(bootstrap: str, topic: str, *, isolation_level: str = "read_uncommitted") -> int:
    """Records in ``topic`` (sum of the partition ends): a cheap progress probe."""
    return sum((await end_offsets(bootstrap, topic, isolation_level=isolation_level)).values())


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offset of every partition it has one for (admin API)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def metrics_text(port: int) -> str:
    status, body = await http_get(port, "/metrics")
    if status != 200:
        raise AssertionError("/metrics answered %d" % status)
    return body


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text format)."""
    total = 0.0
    wanted = ['%s="%s"' % item for item in labels.items()]
    for line in text.splitlines():
        if not (line.startswith(name + " ") or line.startswith(name + "{")):
            continue
        if all(label in line for label in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def readyz(port: int) -> bool | None:
    """True/False from /readyz, None when the server does not answer."""
    try:
        status, _ = await http_get(port, "/readyz")
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    return status == 200


async def wait_complete(
    bootstrap: str,
    stream: Stream,
    keys: set[bytes],
    *,
    timeout: float,
    isolation_level: str = "read_uncommitted",
    fleet: Fleet | None = None,
) -> None:
    """Poll until every key is in both output topics (cheap end-offset probe first, then by key)."""
    deadline = time.monotonic() + timeout
    wanted = len(keys)

    async def enough_records() -> bool:
        counts = [
            await output_count(bootstrap, topic, isolation_level=isolation_level)
            for topic in (stream.topics, stream.styles)
        ]
        return min(counts) >= wanted

    async def all_keys() -> bool:
        for topic in (stream.topics, stream.styles):
            records = await read_topic(bootstrap, topic, isolation_level=isolation_level)
            if len({r.key for r in records} & keys) < wanted:
                return False
        return True

    try:
        await poll_until(enough_records, timeout=timeout, interval=0.25, what="%d output records" % wanted)
        await poll_until(
            all_keys, timeout=max(5.0, deadline - time.monotonic()), interval=0.5, what="every key"
        )
    except TimeoutError as exc:
        missing = []
        for topic in (stream.topics, stream.styles):
            records = await read_topic(bootstrap, topic, isolation_level=isolation_level)
            absent = sorted(keys - {r.key for r in records})
            missing.append("%s: %d missing, e.g. %s" % (topic, len(absent), absent[:3]))
        logs = fleet.logs() if fleet is not None else ""
        raise TimeoutError("%s\n%s\n%s" % (exc, "\n".join(missing), logs)) from None


def first_output_after(records: Sequence[ConsumerRecord], moment: float) -> float | None:
    """Seconds from ``moment`` (epoch s) to the first output record written after it."""
    later = [r.timestamp / 1000 for r in records if r.timestamp / 1000 >= moment]
    return round(min(later) - moment, 3) if later else None


def longest_gap(records: Sequence[ConsumerRecord]) -> float:
    """The longest pause between consecutive output records (s): the outage downstream saw."""
    stamps = sorted(r.timestamp for r in records)
    return round(max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=0) / 1000, 3)


# ----------------------------------------------------------------------------- audit


@dataclass
class Audit:
    """What one scenario produced, checked by id against its input."""

    scenario: str
    messages: int
    lost: int
    duplicated: int
    recovery_s: float | None
    details: dict[str, Any] = field(default_factory=dict)
    topic_records: list[ConsumerRecord] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "messages": self.messages,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "recovery_s": self.recovery_s,
            "details": self.details,
        }


async def audit_outputs(
    bootstrap: str,
    stream: Stream,
    ids: set[str],
    redis_client: Any,
    *,
    scenario: str,
    messages: int,
    isolation_level: str = "read_uncommitted",
) -> Audit:
    """Count, by article id, what reached the topics topic, the styles topic and Redis.

    ``lost`` is the number of ids missing from any of the three; ``duplicated`` the number of
    extra records (beyond one per id) in the worse of the two topics. Records of ids that were
    never streamed are counted as ``unexpected``.
    """
    per_topic: dict[str, Counter[str]] = {}
    topic_records: list[ConsumerRecord] = []
    for name, topic in (("topics", stream.topics), ("styles", stream.styles)):
        records = await read_topic(bootstrap, topic, isolation_level=isolation_level)
        if name == "topics":
            topic_records = records
        per_topic[name] = Counter(r.key.decode() for r in records)
    stored = await redis_results(redis_client, stream.redis_prefix, sorted(ids))
    missing = {
        "topics": len(ids - set(per_topic["topics"])),
        "styles": len(ids - set(per_topic["styles"])),
        "redis": len(ids - set(stored)),
    }
    lost_ids = (ids - set(per_topic["topics"])) | (ids - set(per_topic["styles"])) | (ids - set(stored))
    duplicates = {name: sum(n - 1 for n in counts.values() if n > 1) for name, counts in per_topic.items()}
    unexpected = {name: len(set(counts) - ids) for name, counts in per_topic.items()}
    details = {
        "articles": len(ids),
        "missing": missing,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "isolation_level": isolation_level,
        "longest_output_gap_s": longest_gap(topic_records),
        "lost_examples": sorted(lost_ids)[:5],
    }
    return Audit(
        scenario=scenario,
        messages=messages,
        lost=len(lost_ids),
        duplicated=max(duplicates.values()),
        recovery_s=None,
        details=details,
        topic_records=topic_records,
    )


# ----------------------------------------------------------------------------- poison


def _json(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def poison_corpus(repeat: int) -> list[tuple[str, bytes, bytes | None]]:
    """``repeat`` messages of each of 30 unusable kinds: ``(kind, key, value)``, keys unique.

    The 16 kinds of the service tests (:func:`tests.service._helpers.poison_messages`) plus 14
    more that a real topic sees: other JSON types, encodings and compressions that are not
    UTF-8 JSON, fields of the wrong type or length, ids that cannot be keys.
    """
    base = poison_messages(16, oversize_bytes=SMALL_MAX_BYTES + 1)
    valid = {"id": "x", "title": "A title", "text": "Some body text."}
    extra: list[tuple[str, bytes | None]] = [
        ("json_null", b"null"),
        ("json_number", b"42"),
        ("empty_object", b"{}"),
        ("whitespace_only", b"  \n\t  "),
        ("binary_garbage", bytes(range(256))),
        ("gzip_payload", gzip.compress(json.dumps(valid).encode())),
        ("utf8_bom", b"\xef\xbb\xbf" + json.dumps(valid).encode()),
        ("utf16_json", json.dumps(valid).encode("utf-16")),
        ("xml", b"<article><id>1</id><title>t</title><text>x</text></article>"),
        ("nan_text", b'{"id": "x", "title": "t", "text": NaN}'),
        ("lone_surrogate", b'{"id": "x", "title": "t", "text": "\\ud800 body"}'),
        ("id_too_long", _json(**{**valid, "id": "i" * 129})),
        ("nul_in_id", _json(**{**valid, "id": "a\u0000b"})),
        ("title_is_list", _json(**{**valid, "title": ["a", "b"]})),
        ("publication_is_number", _json(**{**valid, "publication": 7})),
        ("url_too_long", _json(**{**valid, "url": "https://x.example/" + "u" * 5_000})),
    ]
    kinds: list[tuple[str, bytes | None]] = [(kind, value) for kind, _, value in base] + extra
    out: list[tuple[str, bytes, bytes | None]] = []
    for round_ in range(repeat):
        for i, (kind, value) in enumerate(kinds):
            out.append((kind, ("poison-%d-%d" % (round_, i)).encode(), value))
    return out


# ----------------------------------------------------------------------------- redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DedicatedRedis:
    """A redis-server this test owns, so it can take it away and bring it back on the same port.

    Append-only file with fsync on every write: a SIGKILL is a crash, yet every write Redis
    acknowledged before it survives the restart (what a durable production Redis guarantees).
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.workdir),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self, *, timeout: float = 30.0) -> None:
        """Start redis-server (again, on the same port and data) and wait for its PONG."""
        await asyncio.to_thread(self._spawn)
        import redis.asyncio as aioredis

        async def pong() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    "redis-server exited (%s):\n%s" % (self.process.returncode, self.log_tail())
                )
            client = aioredis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
            try:
                return bool(await client.ping())
            except (OSError, aioredis.ConnectionError, aioredis.TimeoutError):
                return False
            finally:
                await client.aclose()

        await poll_until(pong, timeout=timeout, interval=0.05, what="redis-server on port %d" % self.port)

    def kill(self) -> None:
        """SIGKILL and reap (a crash, not a shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.workdir / "redis.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def reach(
    bootstrap: str,
    topic: str,
    target: int,
    *,
    timeout: float,
    fleet: Fleet | None = None,
    isolation_level: str = "read_uncommitted",
) -> int:
    """Poll until ``topic`` holds at least ``target`` records; return the count seen."""

    async def probe() -> int | None:
        count = await output_count(bootstrap, topic, isolation_level=isolation_level)
        return count if count >= target else None

    try:
        return await poll_until(
            probe, timeout=timeout, interval=0.1, what="%d records in %s" % (target, topic)
        )
    except TimeoutError as exc:
        logs = fleet.logs() if fleet is not None else ""
        raise TimeoutError("%s\n%s" % (exc, logs)) from None


async def assigned_partitions(port: int) -> list[str] | None:
    """The partitions a member reports in /readyz (None when it does not answer)."""
    try:
        _, body = await http_get(port, "/readyz")
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    return list(json.loads(body)["checks"]["partitions"])


class OffsetProbe:
    """Fast questions about partition ends, over two long-lived consumers (no group).

    ``count(topic)`` is a progress probe (records written); ``open_transaction()`` spots records
    written past the last stable offset of the watched topics, i.e. a transaction in progress.
    Each is one ListOffsets round trip per consumer, so a scenario can act within milliseconds
    of what it waits for.
    """

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        from aiokafka import AIOKafkaConsumer

        self._bootstrap = bootstrap
        self._topics = list(topics)
        self._written = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted")
        self._stable = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> OffsetProbe:
        for topic in self._topics:
            described = await topic_partitions(self._bootstrap, topic)
            if not described:
                raise RuntimeError("topic %s has no partitions" % topic)
            self._partitions[topic] = [TopicPartition(topic, p["partition"]) for p in described]
        await self._written.start()
        try:
            await self._stable.start()
        except BaseException:
            await self._written.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._written.stop()
        await self._stable.stop()

    async def count(self, topic: str) -> int:
        return int(sum((await self._written.end_offsets(self._partitions[topic])).values()))

    async def reach(self, topic: str, target: int, *, timeout: float, fleet: Fleet | None = None) -> int:
        """Poll until ``topic`` holds at least ``target`` records; return the count seen."""

        async def probe() -> int | None:
            count = await self.count(topic)
            return count if count >= target else None

        try:
            return await poll_until(
                probe, timeout=timeout, interval=0.01, what="%d records in %s" % (target, topic)
            )
        except TimeoutError as exc:
            logs = fleet.logs() if fleet is not None else ""
            raise TimeoutError("%s\n%s" % (exc, logs)) from None

    async def open_transaction(self, topics: Sequence[str]) -> bool:
        partitions = [tp for topic in topics for tp in self._partitions[topic]]
        written = await self._written.end_offsets(partitions)
        stable = await self._stable.end_offsets(partitions)
        return any(stable[tp] < written[tp] for tp in partitions)


class HeldStream:
    """Streams the first ``hold`` messages at once and the rest only after :meth:`release`.

    A fault scenario holds back the tail of its stream until its faults are injected, so every
    fault lands while input is still to come, however fast the machine drains what it has.
    """

    def __init__(self, bootstrap: str, topic: str, messages: Sequence[Any], *, hold: int) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._messages = list(messages)
        self.hold = hold
        self._released = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> HeldStream:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        await produce_messages(self._bootstrap, self._topic, self._messages[: self.hold], timeout=300)
        await self._released.wait()
        await produce_messages(self._bootstrap, self._topic, self._messages[self.hold :], timeout=300)

    def release(self) -> None:
        self._released.set()

    async def finish(self) -> None:
        """Release the tail and wait until every message is acknowledged."""
        self.release()
        assert self._task is not None
        await self._task

    async def close(self) -> None:
        """Stop producing (a scenario that failed half-way must not leave the task behind)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
