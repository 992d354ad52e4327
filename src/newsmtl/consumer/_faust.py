"""``newsmtl faust-worker``: the classifier as a faust-streaming agent (the ``faust`` extra).

Same decoding, same :class:`Predictor` (in one worker thread), same sinks (Kafka topics +
styles, Redis, DLQ) and the same retry policy as ``newsmtl serve``; faust provides the
consumer, the batching (``stream.take_events(max_batch_size, within=max_wait)``), the group
management and its own web server.

What it gives up compared with ``serve``: faust acknowledges a batch's events when the agent
asks for the next batch and commits acknowledged offsets on its own timer
(``broker_commit_interval``), so "commit only after the sinks confirmed" holds only as long as
the agent body never raises (transient errors are retried inside it; a fatal error crashes the
agent after faust has acknowledged the batch, which can skip it). There is no exactly-once
mode, no pause-based back-pressure beyond faust's stream buffer, and no ``/readyz`` or
newsmtl metrics (faust serves its own web views).

faust is imported only here, so nothing else in newsmtl needs the extra.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from newsmtl._errors import ConfigError
from newsmtl._settings import KafkaSettings, Settings
from newsmtl.consumer._batching import decode_batch, log_dead_letters
from newsmtl.consumer._kafka import kafka_client_kwargs
from newsmtl.consumer._predictor import Predictor
from newsmtl.consumer._service import _infer, publish_with_retries
from newsmtl.consumer._sinks import DeadLetterSink, KafkaResultSink, RedisResultSink

__all__ = ["build_faust_app", "run_faust_worker"]

log = logging.getLogger(__name__)


def _import_faust() -> Any:
    try:
        import faust
    except ImportError as exc:
        raise ConfigError("newsmtl faust-worker needs the faust extra: pip install 'newsmtl[faust]'") from exc
    return faust


def _broker_credentials(faust: Any, kafka: KafkaSettings) -> Any:
    """Translate the security settings into faust's credentials object (None for PLAINTEXT)."""
    kwargs = kafka_client_kwargs(kafka)
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    if kafka.sasl_mechanism == "GSSAPI":
        return faust.GSSAPICredentials(ssl_context=kwargs.get("ssl_context"))
    return faust.SASLCredentials(
        username=kwargs["sasl_plain_username"],
        password=kwargs["sasl_plain_password"],
        mechanism=kafka.sasl_mechanism,
        ssl_context=kwargs.get("ssl_context"),
    )


def _record(message: Any) -> Any:
    """A faust message as the aiokafka record :func:`decode_batch` reads (timestamp in ms)."""
    from aiokafka import ConsumerRecord

    return ConsumerRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=int(message.timestamp * 1000),
        timestamp_type=message.timestamp_type,
        key=message.key,
        value=message.value,
        checksum=None,
        serialized_key_size=message.serialized_key_size,
        serialized_value_size=message.serialized_value_size,
        headers=message.headers,
    )


def build_faust_app(settings: Settings, predictor: Predictor) -> Any:
    """A faust App with one agent classifying ``topics.input`` in micro-batches."""
    faust = _import_faust()
    s = settings
    brokers = ";".join(
        "kafka://" + host.strip() for host in s.kafka.bootstrap_servers.split(",") if host.strip()
    )
    app = faust.App(
        s.kafka.group_id,
        broker=brokers,
        broker_credentials=_broker_credentials(faust, s.kafka),
        broker_client_id=s.kafka.client_id,
        broker_session_timeout=s.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=s.kafka.heartbeat_interval_ms / 1000,
        broker_max_poll_interval=s.kafka.max_poll_interval_ms / 1000,
        # faust refuses a request timeout shorter than the session timeout.
        broker_request_timeout=max(s.kafka.request_timeout_ms, s.kafka.session_timeout_ms) / 1000,
        consumer_auto_offset_reset=s.kafka.auto_offset_reset,
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        # No leader-election topic and no topic declarations: like `serve`, the worker expects
        # its topics to exist.
        topic_disable_leader=True,
        topic_allow_declare=False,
        # faust's web server needs a fixed port: http.port=0 turns it off.
        web_enabled=s.http.port != 0,
        web_bind=s.http.host,
        web_port=s.http.port or 6066,
        producer_acks=-1,
    )
    articles = app.topic(s.topics.input, key_type=bytes, value_type=bytes, internal=False)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="newsmtl-infer")

    async def classify(stream: Any) -> None:
        results_sink = KafkaResultSink(kafka=s.kafka, topics=s.topics)
        redis = RedisResultSink(settings=s.redis) if s.redis.enabled else None
        await results_sink.start()
        # One producer for results and dead letters.
        letters_sink = DeadLetterSink(kafka=s.kafka, topics=s.topics, producer=results_sink.producer)
        if redis is not None:
            await redis.start()
        loop = asyncio.get_running_loop()
        within = max(s.batching.max_wait_ms, 1) / 1000
        try:
            async for events in stream.take_events(s.batching.max_batch_size, within=within):
                batch = decode_batch(
                    [_record(event.message) for event in events],
                    max_message_bytes=s.batching.max_message_bytes,
                )
                outcomes: list[Any] = []
                if batch.articles:
                    outcomes, _ = await loop.run_in_executor(
                        executor, _infer, predictor, batch.articles, batch.sources
                    )
                results, _, letters = batch.split(outcomes)
                log_dead_letters(letters)
                await publish_with_retries(
                    results,
                    letters,
                    results_sink=results_sink,
                    letters_sink=letters_sink,
                    redis=redis,
                    service=s.service,
                )
                log.debug("faust batch done: %d results, %d dead letters", len(results), len(letters))
        finally:
            if redis is not None:
                await redis.stop()
            await results_sink.stop()

    app.agent(articles, name="newsmtl-classify")(classify)
    return app


def run_faust_worker(settings: Settings) -> None:
    """Load the model, build the app and run a faust worker until SIGTERM/SIGINT."""
    faust = _import_faust()
    predictor = Predictor.load(settings.model.bundle_path, settings=settings.model)
    app = build_faust_app(settings, predictor)
    worker = faust.Worker(app, loglevel=settings.service.log_level, quiet=True)
    worker.execute_from_commandline()
