"""Micro-batching: collect records until ``max_batch_size`` or ``max_wait_ms``, then decode them.

A batch closes at whichever limit comes first; the clock starts at the batch's first record, so
an idle topic costs nothing and a backlog fills every batch at once. Each message is decoded on
its own: one bad message becomes one :class:`DeadLetter`, never a failed batch.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from newsmtl._errors import InvalidArticleError
from newsmtl._version import __version__
from newsmtl.schemas import Article, ClassificationResult, DeadLetter, KafkaSource, decode_article

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

__all__ = ["Batch", "MicroBatcher", "Outcome", "decode_batch", "log_dead_letters", "make_dead_letter"]

log = logging.getLogger(__name__)

#: One inference outcome per article: its results, or the error the model raised on it.
Outcome = ClassificationResult | BaseException


@dataclass(slots=True)
class Batch:
    """One micro-batch, from fetch to commit.

    ``articles``/``sources``/``timestamps_ms`` are aligned (the valid messages, in fetch order);
    ``dead_letters`` holds the rest. ``commit_offsets`` is the next offset to consume per
    partition (last offset of the batch + 1), ``start_offsets`` the first, for rewinding.
    """

    generation: int
    size: int
    articles: list[Article] = field(default_factory=list)
    sources: list[KafkaSource] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (key, value) of each valid message as received, for dead-lettering it after inference.
    originals: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    commit_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    start_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    # Set by the service: the inference future (results, per-article failures, seconds).
    inference: Any = None

    def split(
        self, outcomes: Sequence[Outcome]
    ) -> tuple[list[ClassificationResult], list[int], list[DeadLetter]]:
        """Pair inference outcomes (aligned with ``articles``) with the batch.

        Returns the results, the Kafka timestamps (ms) of their messages, and every dead letter:
        the undecodable messages plus the articles the model failed on (``inference_failed``).
        """
        results: list[ClassificationResult] = []
        timestamps: list[int] = []
        letters = list(self.dead_letters)
        for (key, value), source, stamp, outcome in zip(
            self.originals, self.sources, self.timestamps_ms, outcomes, strict=True
        ):
            if isinstance(outcome, BaseException):
                reason = f"the model failed on this article: {type(outcome).__name__}: {outcome}"
                letters.append(
                    make_dead_letter(value, key, error_class="inference_failed", reason=reason, source=source)
                )
            else:
                results.append(outcome)
                timestamps.append(stamp)
        return results, timestamps, letters

    def describe(self) -> dict[str, Any]:
        """Log context: the partitions and offset ranges of the batch."""
        return {
            "batch_size": self.size,
            "offsets": {
                f"{tp.topic}-{tp.partition}": [self.start_offsets[tp], end - 1]
                for tp, end in self.commit_offsets.items()
            },
        }


def make_dead_letter(
    value: bytes | None, key: bytes | None, *, error_class: str, reason: str, source: KafkaSource | None
) -> DeadLetter:
    """A :class:`DeadLetter` carrying the original bytes, the reason and where the message came from."""
    return DeadLetter(
        original_base64=base64.b64encode(value or b"").decode("ascii"),
        original_key_base64=base64.b64encode(key).decode("ascii") if key is not None else None,
        error_class=error_class,
        reason=reason,
        source=source,
        failed_at=datetime.now(UTC),
        service_version=__version__,
    )


def log_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """One warning per dead letter, with its error class and source coordinates as context."""
    for letter in letters:
        origin = letter.source
        log.warning(
            "dead-lettering a message: %s",
            letter.reason,
            extra={
                "error_class": letter.error_class,
                "topic": getattr(origin, "topic", None),
                "partition": getattr(origin, "partition", None),
                "offset": getattr(origin, "offset", None),
            },
        )


def decode_batch(records: Sequence[ConsumerRecord], *, max_message_bytes: int, generation: int = 0) -> Batch:
    """Decode every record on its own into a :class:`Batch` of articles and dead letters."""
    from aiokafka import TopicPartition

    batch = Batch(generation=generation, size=len(records))
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        batch.start_offsets.setdefault(tp, record.offset)
        batch.commit_offsets[tp] = max(batch.commit_offsets.get(tp, 0), record.offset + 1)
        source = KafkaSource(topic=record.topic, partition=record.partition, offset=record.offset)
        try:
            article = decode_article(record.value, max_bytes=max_message_bytes)
        except InvalidArticleError as exc:
            batch.dead_letters.append(
                make_dead_letter(
                    record.value, record.key, error_class=exc.kind, reason=exc.reason, source=source
                )
            )
            continue
        batch.articles.append(article)
        batch.sources.append(source)
        batch.timestamps_ms.append(record.timestamp)
        batch.originals.append((record.key, record.value))
    return batch


class MicroBatcher:
    """Pulls one micro-batch of records at a time from an aiokafka consumer.

    ``generation`` (optional) returns a counter the owner bumps when partitions are revoked:
    records collected before a bump belong to an assignment that is gone (the consumer resets
    its positions to the committed offsets), so they are dropped from the batch being built.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        max_batch_size: int,
        max_wait_ms: int,
        idle_poll_ms: int = 500,
        generation: Callable[[], int] | None = None,
    ) -> None:
        self._consumer = consumer
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000
        self._idle_poll_ms = idle_poll_ms
        self._generation = generation or (lambda: 0)

    async def next_batch(self) -> tuple[int, list[ConsumerRecord]]:
        """Return ``(generation, records)``; ``records`` is empty after ``idle_poll_ms`` without data."""
        records: list[ConsumerRecord] = []
        generation = self._generation()
        deadline: float | None = None
        while len(records) < self._max_batch_size:
            if deadline is None:
                timeout_ms = self._idle_poll_ms
            else:
                timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
            fetched = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self._max_batch_size - len(records)
            )
            if self._generation() != generation:
                records.clear()
                generation = self._generation()
                deadline = None
            for partition_records in fetched.values():
                records.extend(partition_records)
            if not records:
                if deadline is None:
                    return generation, records  # idle: let the caller check for shutdown
                continue
            if deadline is None:
                deadline = time.monotonic() + self._max_wait_s
            if time.monotonic() >= deadline:
                break
        return generation, records
