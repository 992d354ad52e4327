"""Where results go: Kafka (topics + styles), Redis, and the dead-letter topic.

The sinks know nothing about the consumer loop, offsets or transactions, so the replay CLI can
reuse them as they are. Each one has ``start``/``stop`` and works as ``async with``; each
``send_batch``/``write_batch`` returns only once every record is acknowledged (Kafka: every
delivery future, ``acks=all``; Redis: the one pipeline of the batch), and raises
:class:`~newsmtl.KafkaSinkError` / :class:`~newsmtl.RedisSinkError` whose ``retriable`` says
whether the same call can succeed later.

The Kafka sinks can share one producer (``producer=``): the service does that so a single
transaction covers results and dead letters in exactly-once mode. A sink stops only a producer
it created itself.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from newsmtl._errors import KafkaSinkError, RedisSinkError
from newsmtl._settings import KafkaSettings, RedisSettings, TopicSettings
from newsmtl.consumer._kafka import is_transient, producer_kwargs
from newsmtl.consumer._lifecycle import AsyncLifecycle
from newsmtl.schemas import ClassificationResult, DeadLetter, KafkaSource, Source

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from redis.asyncio import Redis

__all__ = ["DeadLetterSink", "KafkaResultSink", "RedisResultSink", "redis_key"]

log = logging.getLogger(__name__)

_JSON = ("content-type", b"application/json")

Header = tuple[str, bytes]


def redis_key(prefix: str, article_id: str) -> str:
    """The Redis key of an article's :class:`ClassificationResult`: ``<prefix>article:<id>``."""
    return f"{prefix}article:{article_id}"


def _source_headers(source: Source | None) -> list[Header]:
    if isinstance(source, KafkaSource):
        return [
            ("newsmtl-source-topic", source.topic.encode()),
            ("newsmtl-source-partition", str(source.partition).encode()),
            ("newsmtl-source-offset", str(source.offset).encode()),
        ]
    if source is not None:
        return [
            ("newsmtl-source-file", source.path.encode()),
            ("newsmtl-source-line", str(source.line).encode()),
        ]
    return []


class _KafkaSink(AsyncLifecycle):
    """A producer, owned or borrowed, with start/stop and ``async with``."""

    def __init__(self, *, kafka: KafkaSettings, producer: AIOKafkaProducer | None) -> None:
        self._kafka = kafka
        self._producer = producer
        self._owns_producer = producer is None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._producer

    async def start(self) -> None:
        if self._producer is not None:
            return
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**producer_kwargs(self._kafka))
        try:
            await producer.start()
        except Exception as exc:
            await producer.stop()
            raise KafkaSinkError(
                f"cannot start the Kafka producer: {exc}", retriable=is_transient(exc)
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._owns_producer and self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def _send_all(
        self, records: Sequence[tuple[str, bytes | None, bytes, list[Header]]], what: str
    ) -> None:
        """Send ``(topic, key, value, headers)`` records and await every delivery."""
        producer = self.producer
        try:
            futures = [
                await producer.send(topic, value=value, key=key, headers=headers)
                for topic, key, value, headers in records
            ]
            await asyncio.gather(*futures)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise KafkaSinkError(
                f"publishing {len(records)} {what} failed: {type(exc).__name__}: {exc}",
                retriable=is_transient(exc),
            ) from exc


class KafkaResultSink(_KafkaSink):
    """Publishes each result's :class:`TopicResult` to ``topics.topics`` and its
    :class:`StyleResult` to ``topics.styles``, keyed by article id."""

    def __init__(
        self, *, kafka: KafkaSettings, topics: TopicSettings, producer: AIOKafkaProducer | None = None
    ) -> None:
        super().__init__(kafka=kafka, producer=producer)
        self._topics = topics

    async def send_batch(self, results: Sequence[ClassificationResult]) -> None:
        """Publish both records of every result; returns when all are acknowledged."""
        records: list[tuple[str, bytes | None, bytes, list[Header]]] = []
        for result in results:
            key = result.id.encode()
            headers = [
                _JSON,
                ("newsmtl-model-name", result.topic.model_name.encode()),
                ("newsmtl-model-version", result.topic.model_version.encode()),
                *_source_headers(result.topic.source),
            ]
            records.append((self._topics.topics, key, result.topic.model_dump_json().encode(), headers))
            records.append((self._topics.styles, key, result.style.model_dump_json().encode(), headers))
        await self._send_all(records, "results")


class DeadLetterSink(_KafkaSink):
    """Publishes :class:`DeadLetter` records to ``topics.dlq``, keyed by the original key."""

    def __init__(
        self, *, kafka: KafkaSettings, topics: TopicSettings, producer: AIOKafkaProducer | None = None
    ) -> None:
        super().__init__(kafka=kafka, producer=producer)
        self._topics = topics

    async def send_batch(self, letters: Sequence[DeadLetter]) -> None:
        """Publish every dead letter; returns when all are acknowledged."""
        records: list[tuple[str, bytes | None, bytes, list[Header]]] = []
        for letter in letters:
            key = (
                base64.b64decode(letter.original_key_base64)
                if letter.original_key_base64 is not None
                else None
            )
            headers = [
                _JSON,
                ("newsmtl-error-class", letter.error_class.encode()),
                *_source_headers(letter.source),
            ]
            records.append((self._topics.dlq, key, letter.model_dump_json().encode(), headers))
        await self._send_all(records, "dead letters")


class RedisResultSink(AsyncLifecycle):
    """Upserts each :class:`ClassificationResult` at ``<prefix>article:<id>``, one pipeline per batch.

    The writes are idempotent (``SET`` of the whole result), so a batch retried after a failure
    or re-processed after a restart leaves the same state. ``ttl_seconds=0`` stores without expiry.
    """

    def __init__(self, *, settings: RedisSettings, client: Redis | None = None) -> None:
        self._settings = settings
        self._client = client
        self._owns_client = client is None

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise RuntimeError("RedisResultSink is not started")
        return self._client

    async def start(self) -> None:
        if self._client is not None:
            return
        from redis.asyncio import Redis

        s = self._settings
        # The client connects lazily: a Redis that is down at start-up shows in /readyz and in
        # the retried writes, not as a crash.
        self._client = Redis.from_url(
            s.url,
            username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            socket_timeout=s.socket_timeout_s,
            socket_connect_timeout=s.socket_timeout_s,
        )

    async def stop(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def write_batch(self, results: Sequence[ClassificationResult]) -> None:
        """Write every result in one pipeline; returns when Redis has answered all of them."""
        if not results:
            return
        ttl = self._settings.ttl_seconds or None
        prefix = self._settings.key_prefix
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for result in results:
                    pipe.set(redis_key(prefix, result.id), result.model_dump_json(), ex=ttl)
                await pipe.execute()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise RedisSinkError(
                f"writing {len(results)} results to Redis failed: {type(exc).__name__}: {exc}",
                retriable=is_transient(exc),
            ) from exc

    async def ping(self) -> bool:
        """Whether Redis answers (used by readiness)."""
        try:
            return bool(await self.client.ping())
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.debug("Redis ping failed: %s", exc)
            return False
