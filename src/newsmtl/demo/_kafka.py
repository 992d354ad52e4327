"""``newsmtl demo --kafka``: the samples through a real broker and the real service, live.

::

    producer ──samples──> <demo>-articles ──NewsService (in-process, same predictor)──>
        <demo>-topics + <demo>-styles ──plain consumer──> live table, row by row as results arrive

Every run uses fresh topic and group names (``newsmtl-demo-<random>-...``), so it never
touches a real deployment's topics; they are deleted at the end unless ``keep_topics``.
Redis is left out (the demo needs only a broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from newsmtl._errors import ServiceError
from newsmtl._settings import Settings, load_settings
from newsmtl.demo._table import results_table
from newsmtl.schemas import Article, ClassificationResult, StyleResult, TopicResult

if TYPE_CHECKING:
    from rich.console import Console

    from newsmtl.consumer import Predictor

__all__ = ["DemoTopics", "stream_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoTopics:
    """Fresh names of one demo run."""

    input: str
    topics: str
    styles: str
    dlq: str
    group: str

    @classmethod
    def fresh(cls) -> DemoTopics:
        base = "newsmtl-demo-%s" % uuid.uuid4().hex[:10]
        return cls(
            input=base + "-articles",
            topics=base + "-topics",
            styles=base + "-styles",
            dlq=base + "-dlq",
            group=base + "-group",
        )

    @property
    def all(self) -> list[str]:
        return [self.input, self.topics, self.styles, self.dlq]


@dataclass
class _Arrivals:
    """Topic and style results as they arrive, joined by article id."""

    topics: dict[str, TopicResult] = field(default_factory=dict)
    styles: dict[str, StyleResult] = field(default_factory=dict)
    arrived_at: dict[str, float] = field(default_factory=dict)

    def add(self, topic_name: str, value: bytes, names: DemoTopics) -> None:
        if topic_name == names.topics:
            topic = TopicResult.model_validate_json(value)
            self.topics[topic.id] = topic
        else:
            style = StyleResult.model_validate_json(value)
            self.styles[style.id] = style
        for article_id in set(self.topics) & set(self.styles):
            self.arrived_at.setdefault(article_id, time.monotonic())

    def result(self, article_id: str) -> ClassificationResult | None:
        if article_id not in self.arrived_at:
            return None
        return ClassificationResult(
            id=article_id, topic=self.topics[article_id], style=self.styles[article_id]
        )


def _settings(bootstrap: str, names: DemoTopics) -> Settings:
    # Security settings (SASL/TLS) still come from NEWSMTL_KAFKA__* in the environment.
    return load_settings(
        kafka={"bootstrap_servers": bootstrap, "group_id": names.group, "client_id": "newsmtl-demo"},
        topics={"input": names.input, "topics": names.topics, "styles": names.styles, "dlq": names.dlq},
        redis={"enabled": False},
        http={"host": "127.0.0.1", "port": 0},
        batching={"max_wait_ms": 20, "max_batch_size": 8},
        service={"shutdown_grace_s": 10.0, "log_format": "text"},
    )


async def _create_topics(settings: Settings, names: DemoTopics, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from newsmtl.consumer import kafka_client_kwargs

    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings.kafka))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(names.input, partitions, 1)] + [NewTopic(n, 1, 1) for n in names.all[1:]],
            timeout_ms=30_000,
        )
    finally:
        await admin.close()


async def _delete_topics(settings: Settings, names: DemoTopics) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from newsmtl.consumer import kafka_client_kwargs

    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings.kafka))
    await admin.start()
    try:
        await admin.delete_topics(names.all, timeout_ms=30_000)
    finally:
        await admin.close()


async def stream_demo(
    articles: Sequence[Article],
    *,
    predictor: Predictor,
    bootstrap: str,
    console: Console,
    interval_s: float = 0.1,
    timeout_s: float = 120.0,
    keep_topics: bool = False,
    partitions: int = 3,
    live: bool = True,
) -> tuple[list[ClassificationResult], list[float]]:
    """Stream ``articles`` through a broker and an in-process service; returns the results in
    article order and each one's latency (produce to both results consumed), in seconds.

    Raises :class:`~newsmtl.ServiceError` when the broker is unreachable or not every result
    arrives within ``timeout_s``.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import KafkaError
    from rich.live import Live

    from newsmtl.consumer import NewsService, kafka_client_kwargs, producer_kwargs

    names = DemoTopics.fresh()
    settings = _settings(bootstrap, names)
    try:
        await _create_topics(settings, names, partitions)
    except KafkaError as exc:
        raise ServiceError(
            "cannot reach Kafka at %s: %s: %s" % (bootstrap, type(exc).__name__, exc)
        ) from None
    arrivals = _Arrivals()
    sent_at: dict[str, float] = {}
    ids = [a.id for a in articles]

    def render() -> Any:
        results = [arrivals.result(i) for i in ids]
        latencies = [
            "%.0f ms" % (1000 * (arrivals.arrived_at[i] - sent_at[i]))
            if i in arrivals.arrived_at and i in sent_at
            else ""
            for i in ids
        ]
        done = sum(r is not None for r in results)
        return results_table(
            articles,
            results,
            title="newsmtl demo via Kafka %s: %d of %d classified" % (bootstrap, done, len(ids)),
            caption="input %s -> %s, %s (model %s %s)"
            % (names.input, names.topics, names.styles, predictor.model_name, predictor.model_version),
            extra=latencies,
            extra_header="latency",
        )

    service = NewsService(settings=settings, predictor=predictor)
    consumer = AIOKafkaConsumer(
        names.topics,
        names.styles,
        **kafka_client_kwargs(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(**producer_kwargs(settings.kafka))
    try:
        async with service:
            run = asyncio.create_task(service.run(), name="newsmtl-demo-service")
            await consumer.start()
            await producer.start()
            try:
                view = (
                    Live(render(), console=console, refresh_per_second=8, transient=False) if live else None
                )
                with view if view is not None else contextlib.nullcontext():

                    async def produce() -> None:
                        for article in articles:
                            sent_at[article.id] = time.monotonic()
                            await producer.send_and_wait(
                                names.input, value=article.model_dump_json().encode(), key=article.id.encode()
                            )
                            if interval_s > 0:
                                await asyncio.sleep(interval_s)

                    producing = asyncio.create_task(produce(), name="newsmtl-demo-produce")
                    deadline = time.monotonic() + timeout_s
                    last_shown = -1
                    printed: set[str] = set()
                    while len(arrivals.arrived_at) < len(set(ids)):
                        if run.done():
                            run.result()  # raises the service's error
                            raise ServiceError("the service stopped before every result arrived")
                        if producing.done() and producing.exception() is not None:
                            producing.result()
                        if time.monotonic() > deadline:
                            raise ServiceError(
                                "only %d of %d results arrived within %.0f s"
                                % (len(arrivals.arrived_at), len(set(ids)), timeout_s)
                            )
                        batch = await consumer.getmany(timeout_ms=200)
                        for tp, records in batch.items():
                            for record in records:
                                if record.value is not None:
                                    arrivals.add(tp.topic, record.value, names)
                        if len(arrivals.arrived_at) != last_shown:
                            last_shown = len(arrivals.arrived_at)
                            if view is not None:
                                view.update(render())
                            else:
                                _print_arrivals(console, arrivals, sent_at, ids, printed)
                    await producing
            finally:
                service.request_stop()
                await producer.stop()
                await consumer.stop()
                await asyncio.gather(run, return_exceptions=True)
    except KafkaError as exc:
        raise ServiceError("Kafka at %s failed: %s: %s" % (bootstrap, type(exc).__name__, exc)) from None
    finally:
        if not keep_topics:
            try:
                await _delete_topics(settings, names)
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the demo's own outcome
                log.warning("could not delete the demo topics %s: %s", names.all, exc)
    results = [arrivals.result(i) for i in ids]
    latencies = [arrivals.arrived_at[i] - sent_at[i] for i in ids]
    return [r for r in results if r is not None], latencies


def _print_arrivals(
    console: Console, arrivals: _Arrivals, sent_at: dict[str, float], ids: Sequence[str], printed: set[str]
) -> None:
    """Without a terminal for a live table: one line per result as it arrives."""
    for article_id in ids:
        result = arrivals.result(article_id)
        if result is None or article_id in printed:
            continue
        printed.add(article_id)
        topic = result.topic
        console.print(
            "%s arrived after %.0f ms: %s %.2f, reads like %s"
            % (
                article_id,
                1000
                * (
                    arrivals.arrived_at[article_id] - sent_at.get(article_id, arrivals.arrived_at[article_id])
                ),
                topic.topic,
                topic.topic_scores.get(topic.topic, 0.0),
                result.style.top_style,
            ),
            highlight=False,
        )
