"""Kafka input of a replay: offset or time ranges of a topic's partitions, read in a fixed order.

A plain :class:`aiokafka.AIOKafkaConsumer` with manual assignment: no consumer group, no
commits, so a replay never disturbs the service's group. Partitions are read one after the
other in ascending order, each from its range start to its (exclusive) end, which makes the
record order, and so the output, the same on every run.

Ranges are resolved once, when a replay starts: offsets are clamped to what the partition
still holds (retention may have deleted the oldest records), times go through
``offsets_for_times``, and a missing end is the partition's end offset at that moment (a live
topic's replay still terminates). The resolved ranges are stored in the checkpoint, so a
resumed replay stops where the original one would have, even if the topic has grown since.

Position (checkpoint)::

    {"ranges": {"<partition>": [start, end]}, "next": {"<partition>": next offset to read}}
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from newsmtl._errors import ConfigError, DataError
from newsmtl._settings import KafkaSettings
from newsmtl.replay._inputs import RawRecord
from newsmtl.schemas import KafkaSource

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

__all__ = ["KafkaRangeReader", "PartitionRange", "RangeSpec", "parse_partition_range", "parse_timestamp"]

log = logging.getLogger(__name__)

# A range whose position stops moving for this long (broker gone, partition offline) fails
# the replay instead of hanging it.
_STALL_TIMEOUT_S = 120.0
_FETCH_TIMEOUT_MS = 1_000


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """``--partition-range P:START-END``: offsets START (inclusive) to END (exclusive) of partition P.

    Either bound may be omitted (``0:100-``, ``0:-500``, ``0``): the partition's first offset,
    its end offset.
    """

    partition: int
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeSpec:
    """What part of the topic to replay, as given by the flags."""

    partitions: tuple[PartitionRange, ...] = ()
    from_offset: int | None = None
    to_offset: int | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None

    def __post_init__(self) -> None:
        if self.partitions and any(
            v is not None for v in (self.from_offset, self.to_offset, self.from_time, self.to_time)
        ):
            raise ConfigError(
                "--partition-range cannot be combined with --from-offset/--to-offset/--from-time/--to-time"
            )
        if self.from_offset is not None and self.from_time is not None:
            raise ConfigError("give either --from-offset or --from-time, not both")
        if self.to_offset is not None and self.to_time is not None:
            raise ConfigError("give either --to-offset or --to-time, not both")
        for name, value in (("--from-offset", self.from_offset), ("--to-offset", self.to_offset)):
            if value is not None and value < 0:
                raise ConfigError("%s must be >= 0, got %d" % (name, value))
        if self.from_offset is not None and self.to_offset is not None and self.to_offset < self.from_offset:
            raise ConfigError(
                "--to-offset %d is before --from-offset %d" % (self.to_offset, self.from_offset)
            )
        if self.from_time is not None and self.to_time is not None and self.to_time < self.from_time:
            raise ConfigError("--to-time is before --from-time")
        seen: set[int] = set()
        for pr in self.partitions:
            if pr.partition in seen:
                raise ConfigError("--partition-range names partition %d twice" % pr.partition)
            seen.add(pr.partition)

    def describe(self) -> dict[str, Any]:
        return {
            "partitions": [[p.partition, p.start, p.end] for p in self.partitions],
            "from_offset": self.from_offset,
            "to_offset": self.to_offset,
            "from_time": self.from_time.isoformat() if self.from_time else None,
            "to_time": self.to_time.isoformat() if self.to_time else None,
        }


def parse_partition_range(spec: str) -> PartitionRange:
    """``"0:100-200"`` -> ``PartitionRange(0, 100, 200)``; bounds may be empty; ``"3"`` is all of partition 3."""
    part, _, bounds = spec.strip().partition(":")
    try:
        partition = int(part)
        if not bounds:
            start_s, end_s = "", ""
        else:
            start_s, sep, end_s = bounds.partition("-")
            if not sep:
                raise ValueError("missing '-'")
        start = int(start_s) if start_s.strip() else None
        end = int(end_s) if end_s.strip() else None
    except ValueError:
        raise ConfigError(
            "--partition-range %r must look like PARTITION:START-END (END exclusive; either bound may be empty)"
            % spec
        ) from None
    if partition < 0 or (start is not None and start < 0) or (end is not None and end < 0):
        raise ConfigError("--partition-range %r: partition and offsets must be >= 0" % spec)
    if start is not None and end is not None and end < start:
        raise ConfigError("--partition-range %r: END is before START" % spec)
    return PartitionRange(partition, start, end)


def parse_timestamp(value: str, *, flag: str) -> datetime:
    """ISO-8601 (``2024-03-01``, ``2024-03-01T12:00:00Z``, with offset); naive times are UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            "%s %r is not an ISO-8601 time such as 2024-03-01T12:00:00Z" % (flag, value)
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class KafkaRangeReader:
    """Reads the ranges of ``topic`` given by ``spec``; see the module docstring."""

    def __init__(
        self, *, kafka: KafkaSettings, topic: str, spec: RangeSpec, fetch_records: int = 500
    ) -> None:
        if not topic:
            raise ConfigError("--topic must not be empty")
        self.kafka = kafka
        self.topic = topic
        self.spec = spec
        self.fetch_records = max(1, fetch_records)
        self._consumer: AIOKafkaConsumer | None = None
        self._ranges: dict[int, tuple[int, int]] = {}
        self._next: dict[int, int] = {}

    # -- RecordReader ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"kind": "kafka", "topic": self.topic, "range": self.spec.describe()}

    @property
    def ranges(self) -> dict[int, tuple[int, int]]:
        """The resolved ``partition -> (start, end)`` (after :meth:`open`)."""
        return dict(self._ranges)

    @property
    def progress_total(self) -> int | None:
        return sum(end - start for start, end in self._ranges.values())

    def progress_done(self) -> int:
        return sum(self._next[p] - start for p, (start, _end) in self._ranges.items())

    def position(self) -> dict[str, Any]:
        return {
            "ranges": {str(p): [s, e] for p, (s, e) in sorted(self._ranges.items())},
            "next": {str(p): n for p, n in sorted(self._next.items())},
        }

    async def open(self, resume: Mapping[str, Any] | None) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        from newsmtl.consumer import kafka_client_kwargs

        consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(self.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.fetch_records,
            fetch_max_bytes=self.kafka.fetch_max_bytes,
            max_partition_fetch_bytes=self.kafka.max_partition_fetch_bytes,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise DataError(
                "cannot connect to Kafka at %s: %s" % (self.kafka.bootstrap_servers, exc), retriable=True
            ) from None
        self._consumer = consumer
        try:
            if resume:
                self._load_position(resume)
            else:
                await self._resolve(consumer)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def _load_position(self, resume: Mapping[str, Any]) -> None:
        try:
            self._ranges = {int(p): (int(b[0]), int(b[1])) for p, b in resume["ranges"].items()}
            self._next = {int(p): int(n) for p, n in resume["next"].items()}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(
                "checkpoint position %r is not a Kafka position: %s" % (dict(resume), exc)
            ) from None
        if set(self._ranges) != set(self._next):
            raise DataError("checkpoint position names different partitions in its ranges and offsets")

    async def _resolve(self, consumer: AIOKafkaConsumer) -> None:
        from aiokafka import TopicPartition

        # topics() lists every topic without ever creating one; describing the topic then gives
        # its partitions (the consumer's own metadata only covers assigned topics).
        if self.topic not in await consumer.topics():
            raise ConfigError("topic %r does not exist on %s" % (self.topic, self.kafka.bootstrap_servers))
        available = await self._partitions()
        spec = self.spec
        if spec.partitions:
            unknown = sorted(p.partition for p in spec.partitions if p.partition not in available)
            if unknown:
                raise ConfigError(
                    "topic %r has no partition %s (it has %s)"
                    % (self.topic, ", ".join(map(str, unknown)), ", ".join(map(str, sorted(available))))
                )
            wanted: dict[int, tuple[int | None, int | None]] = {
                p.partition: (p.start, p.end) for p in spec.partitions
            }
        else:
            wanted = {p: (spec.from_offset, spec.to_offset) for p in sorted(available)}
        tps = [TopicPartition(self.topic, p) for p in sorted(wanted)]
        first = await consumer.beginning_offsets(tps)
        last = await consumer.end_offsets(tps)
        from_times: dict[Any, Any] = {}
        to_times: dict[Any, Any] = {}
        if spec.from_time is not None:
            from_times = await consumer.offsets_for_times({tp: _ms(spec.from_time) for tp in tps})
        if spec.to_time is not None:
            to_times = await consumer.offsets_for_times({tp: _ms(spec.to_time) for tp in tps})
        for tp in tps:
            low, high = int(first[tp]), int(last[tp])
            start, end = wanted[tp.partition]
            if spec.from_time is not None:
                found = from_times.get(tp)
                start = high if found is None else int(found.offset)
            if spec.to_time is not None:
                # The first offset at or after --to-time is the exclusive end.
                found = to_times.get(tp)
                end = high if found is None else int(found.offset)
            start = low if start is None else start
            end = high if end is None else end
            if start < low:
                log.warning(
                    "partition %d of %s starts at offset %d now; offsets %d-%d are gone (retention)",
                    tp.partition,
                    self.topic,
                    low,
                    start,
                    low - 1,
                )
                start = low
            end = min(end, high)
            start = min(start, end)
            self._ranges[tp.partition] = (start, end)
            self._next[tp.partition] = start
        log.info("replaying %s: %s", self.topic, describe_ranges(self._ranges))

    async def _partitions(self) -> set[int]:
        from aiokafka.admin import AIOKafkaAdminClient

        from newsmtl.consumer import kafka_client_kwargs

        admin = AIOKafkaAdminClient(**kafka_client_kwargs(self.kafka))
        await admin.start()
        try:
            described = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        for entry in described:
            if entry["topic"] == self.topic and entry["error_code"] == 0:
                return {int(p["partition"]) for p in entry["partitions"]}
        raise DataError(
            "cannot describe topic %r on %s" % (self.topic, self.kafka.bootstrap_servers), retriable=True
        )

    async def records(self) -> AsyncGenerator[RawRecord, None]:
        from aiokafka import TopicPartition

        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("KafkaRangeReader.open() was not called")
        for partition, (_start, end) in sorted(self._ranges.items()):
            if self._next[partition] >= end:
                continue
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, self._next[partition])
            last_progress = time.monotonic()
            while self._next[partition] < end:
                fetched = await consumer.getmany(
                    tp, timeout_ms=_FETCH_TIMEOUT_MS, max_records=self.fetch_records
                )
                messages = fetched.get(tp, [])
                if not messages:
                    # Gaps (compaction, transaction markers) can leave the range's last offsets
                    # without a record: the consumer position says when the range is through.
                    if await consumer.position(tp) >= end:
                        self._next[partition] = end
                        break
                    if time.monotonic() - last_progress > _STALL_TIMEOUT_S:
                        raise DataError(
                            "no progress on %s partition %d at offset %d for %.0f s"
                            % (self.topic, partition, self._next[partition], _STALL_TIMEOUT_S),
                            retriable=True,
                        )
                    continue
                last_progress = time.monotonic()
                for message in messages:
                    if message.offset >= end:
                        self._next[partition] = end
                        break
                    self._next[partition] = message.offset + 1
                    stamp = (
                        datetime.fromtimestamp(message.timestamp / 1000, UTC)
                        if message.timestamp is not None and message.timestamp >= 0
                        else None
                    )
                    yield RawRecord(
                        source=KafkaSource(topic=self.topic, partition=partition, offset=message.offset),
                        value=message.value,
                        timestamp=stamp,
                    )


def describe_ranges(ranges: Mapping[int, Sequence[int]]) -> str:
    return ", ".join("p%d [%d, %d)" % (p, r[0], r[1]) for p, r in sorted(ranges.items()))
