"""``newsmtl serve``: consume articles, classify them in micro-batches, publish, then commit.

Three stages run concurrently, so the model never waits for Kafka and Kafka never waits for
the model::

    fetch loop (event loop)         inference (one worker thread)      publish loop (event loop)
    getmany -> decode each  ──────> Predictor.predict(batch N+1) ────> sinks for batch N: topics,
    message -> Batch, start its     in fetch order                      styles, DLQ, Redis; await
    inference, enqueue                                                  every ack; commit offsets

At most ``batching.max_in_flight_batches`` batches are between fetch and commit; when that many
are, the fetch loop pauses every assigned partition (and keeps polling, so the group never sees
an idle member) until the publish loop has committed one.

Delivery: a batch's offsets are committed only after all of its results, dead letters and Redis
writes are acknowledged, and batches commit in fetch order, so a crash can repeat results but
never lose one (at-least-once). Transient downstream errors are retried with exponential
backoff and never skip a batch. With ``service.exactly_once`` each batch's results, dead
letters and input offsets are written in one Kafka transaction instead (see ``_publish_eos``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka_errors

from newsmtl._errors import ServiceError
from newsmtl._settings import KafkaSettings, ServiceSettings, Settings
from newsmtl.consumer._batching import Batch, MicroBatcher, Outcome, decode_batch, log_dead_letters
from newsmtl.consumer._http import HealthServer
from newsmtl.consumer._kafka import is_transient, kafka_client_kwargs, producer_kwargs
from newsmtl.consumer._lifecycle import AsyncLifecycle
from newsmtl.consumer._metrics import ServiceMetrics
from newsmtl.consumer._retry import retry_transient
from newsmtl.consumer._sinks import DeadLetterSink, KafkaResultSink, RedisResultSink
from newsmtl.schemas import ClassificationResult, DeadLetter

if TYPE_CHECKING:
    from newsmtl.consumer._predictor import Predictor
    from newsmtl.schemas import Article, KafkaSource

__all__ = ["NewsService", "publish_with_retries", "transactional_id"]

log = logging.getLogger(__name__)

# How long readiness answers are reused: probes may come every second from several sources,
# and each check costs a metadata request and a Redis PING.
_READINESS_CACHE_S = 1.5
_DEPENDENCY_TIMEOUT_S = 1.0
# While paused, poll at least this often so aiokafka never counts the member as idle.
_PAUSED_POLL_S = 0.5
_ABORT_TIMEOUT_S = 10.0


def transactional_id(kafka: KafkaSettings) -> str:
    """The exactly-once producer's id: stable across restarts of the same member.

    With ``kafka.group_instance_id`` (static membership, e.g. the pod name of a StatefulSet) a
    restarted instance reuses its id, which fences its predecessor and aborts the transaction
    it left open at once. Without one, the id is unique per process (host and pid): instances
    never fence each other by mistake, but an open transaction of a crashed instance holds back
    ``read_committed`` readers until the broker times it out (``transaction_timeout_ms``).
    """
    member = kafka.group_instance_id or f"{socket.gethostname()}-{os.getpid()}"
    return f"{kafka.transactional_id_prefix}-{kafka.group_id}-{member}"


def _infer(
    predictor: Predictor, articles: Sequence[Article], sources: Sequence[KafkaSource]
) -> tuple[list[Outcome], float]:
    """Run in the inference thread: classify a batch, isolating articles that make the model fail.

    A batch-level failure is retried article by article, so one poison article is dead-lettered
    instead of blocking its partition. If every article fails on its own too, the model (not the
    input) is broken and :class:`ServiceError` stops the service; a batch of one that fails can
    not tell the two apart and is dead-lettered.
    """
    start = time.perf_counter()
    try:
        outcomes: list[Outcome] = list(predictor.predict(articles, sources))
    except Exception as batch_exc:
        if len(articles) == 1:
            return [batch_exc], time.perf_counter() - start
        outcomes = []
        for article, source in zip(articles, sources, strict=True):
            try:
                outcomes.extend(predictor.predict([article], [source]))
            except Exception as exc:  # noqa: BLE001 - becomes this article's dead letter
                outcomes.append(exc)
        if all(isinstance(o, BaseException) for o in outcomes):
            raise ServiceError(
                f"the model failed on every article of a batch of {len(articles)}: "
                f"{type(batch_exc).__name__}: {batch_exc}"
            ) from batch_exc
    return outcomes, time.perf_counter() - start


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: NewsService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._service._on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._service._on_partitions_assigned(assigned)


@dataclass(slots=True)
class _Clients:
    """Everything :meth:`NewsService.start` connects; present exactly while the service is started."""

    executor: ThreadPoolExecutor
    producer: AIOKafkaProducer
    consumer: AIOKafkaConsumer
    results: KafkaResultSink
    dead_letters: DeadLetterSink
    redis: RedisResultSink | None


class NewsService(AsyncLifecycle):
    """The streaming classifier. Use ``async with NewsService(settings=...) as s: await s.run()``.

    ``predictor`` may be passed already loaded (benchmarks, tests); otherwise :meth:`start`
    loads ``settings.model`` in the inference thread. :meth:`request_stop` (wired to
    SIGTERM/SIGINT by the CLI) makes :meth:`run` stop fetching, finish and commit in-flight
    batches within ``service.shutdown_grace_s`` and return.
    """

    def __init__(self, *, settings: Settings, predictor: Predictor | None = None) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self._predictor = predictor
        self._eos = settings.service.exactly_once
        self._clients: _Clients | None = None
        self._http: HealthServer | None = None
        self._running = False
        self._publish_task: asyncio.Task[None] | None = None

        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._in_flight = 0
        self._idle = asyncio.Event()  # set while no batch is between fetch and commit
        self._idle.set()
        self._has_room = asyncio.Event()  # set while fewer than max_in_flight_batches are in flight
        self._has_room.set()
        self._stop_requested = asyncio.Event()
        self._abandon = asyncio.Event()  # a second stop request: do not wait for in-flight batches
        # Bumped when partitions are revoked: batches fetched under an older assignment that
        # are still in flight afterwards were abandoned and must not be committed.
        self._generation = 0
        self._readiness_cache: tuple[float, bool, dict[str, Any]] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            raise ServiceError("the service has no model loaded yet")
        return self._predictor

    @property
    def clients(self) -> _Clients:
        if self._clients is None:
            raise ServiceError("the service is not started")
        return self._clients

    @property
    def http_port(self) -> int | None:
        """The bound port of the health/metrics server (useful with ``http.port=0``)."""
        return self._http.port if self._http is not None else None

    async def start(self) -> None:
        """Start the health server, load the model, connect producer, Redis and consumer."""
        if self._clients is not None:
            return
        s = self.settings
        loop = asyncio.get_running_loop()
        txn_id = transactional_id(s.kafka) if self._eos else None
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="newsmtl-infer")
        producer = AIOKafkaProducer(**producer_kwargs(s.kafka, transactional_id=txn_id))
        consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(s.kafka),
            group_id=s.kafka.group_id,
            group_instance_id=s.kafka.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset=s.kafka.auto_offset_reset,
            session_timeout_ms=s.kafka.session_timeout_ms,
            heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
            max_poll_interval_ms=s.kafka.max_poll_interval_ms,
            max_poll_records=s.kafka.max_poll_records,
            fetch_max_bytes=s.kafka.fetch_max_bytes,
            max_partition_fetch_bytes=s.kafka.max_partition_fetch_bytes,
            isolation_level="read_committed" if self._eos else "read_uncommitted",
        )
        consumer.subscribe([s.topics.input], listener=_RebalanceListener(self))
        self._clients = _Clients(
            executor=executor,
            producer=producer,
            consumer=consumer,
            results=KafkaResultSink(kafka=s.kafka, topics=s.topics, producer=producer),
            dead_letters=DeadLetterSink(kafka=s.kafka, topics=s.topics, producer=producer),
            redis=RedisResultSink(settings=s.redis) if s.redis.enabled else None,
        )
        try:
            # Liveness answers while the model loads; readiness waits for everything below.
            self._http = HealthServer(
                host=s.http.host, port=s.http.port, metrics=self.metrics, readiness=self.readiness
            )
            await self._http.start()
            if self._predictor is None:
                from newsmtl.consumer._predictor import Predictor

                self._predictor = await loop.run_in_executor(
                    executor, lambda: Predictor.load(s.model.bundle_path, settings=s.model)
                )
            self.metrics.set_model(self.predictor.model_name, self.predictor.model_version)
            await producer.start()
            if self._clients.redis is not None:
                await self._clients.redis.start()
            await consumer.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "service started: %s -> %s, %s%s (%s mode, model %s %s)",
            s.topics.input,
            s.topics.topics,
            s.topics.styles,
            ", redis" if s.redis.enabled else "",
            "exactly-once" if self._eos else "at-least-once",
            self.predictor.model_name,
            self.predictor.model_version,
            extra={"group_id": s.kafka.group_id, "transactional_id": txn_id},
        )

    async def stop(self) -> None:
        """Close every client (safe after a partial start and when called twice)."""
        self._stop_requested.set()
        self.metrics.ready.set(0)
        clients, self._clients = self._clients, None
        http, self._http = self._http, None
        closers: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if clients is not None:
            # The consumer first: it leaves the group, so its partitions move on at once.
            closers += [("consumer", clients.consumer.stop), ("producer", clients.producer.stop)]
            if clients.redis is not None:
                closers.append(("redis", clients.redis.stop))
        if http is not None:
            closers.append(("http server", http.stop))
        for what, closer in closers:
            try:
                await closer()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest
                log.warning("closing the %s failed: %s", what, exc)
        if clients is not None:
            clients.executor.shutdown(wait=False, cancel_futures=True)

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop fetching, drain, commit and return (signal-handler safe).

        A second request stops waiting for in-flight batches: they are not committed and are
        processed again after the restart.
        """
        if self._stop_requested.is_set():
            log.warning("second stop request: abandoning %d in-flight batches", self._in_flight)
            self._abandon.set()
        else:
            log.info("stop requested: draining in-flight batches")
        self._stop_requested.set()

    async def run(self) -> None:
        """Consume until :meth:`request_stop`; raise :class:`ServiceError` on a fatal error."""
        self.clients  # noqa: B018 - raises ServiceError when not started
        self._running = True
        fetch = asyncio.create_task(self._fetch_loop(), name="newsmtl-fetch")
        publish = self._publish_task = asyncio.create_task(self._publish_loop(), name="newsmtl-publish")
        stop = asyncio.create_task(self._stop_requested.wait(), name="newsmtl-stop")
        grace = self.settings.service.shutdown_grace_s
        try:
            await asyncio.wait({fetch, publish, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._running = False
            self._stop_requested.set()
            self.metrics.ready.set(0)
            deadline = time.monotonic() + grace
            # 1. Stop fetching. Records fetched but not yet enqueued are not committed and come back later.
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
            # 2. Finish, publish and commit what is in flight, within the grace period.
            if not publish.done():
                await self._wait_idle(publish, within=max(0.0, deadline - time.monotonic()))
                if not self._idle.is_set():
                    log.warning(
                        "shutdown grace of %.1f s is over: abandoning %d uncommitted batches (they will be reprocessed)",
                        grace,
                        self._in_flight,
                    )
            publish.cancel()
            await asyncio.gather(publish, return_exceptions=True)
            stop.cancel()
        for task in (fetch, publish):
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                if isinstance(exc, ServiceError):
                    raise exc
                raise ServiceError(
                    f"the {task.get_name()} stage failed: {type(exc).__name__}: {exc}"
                ) from exc
        log.info("service stopped cleanly")

    # -- readiness -----------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, checks)``: model loaded, partitions assigned, Kafka and Redis answering."""
        now = time.monotonic()
        cached = self._readiness_cache
        if cached is not None and now - cached[0] < _READINESS_CACHE_S:
            return cached[1], cached[2]
        clients = self._clients
        checks: dict[str, Any] = {
            "running": self._running,
            "model": self._predictor is not None,
            "partitions": _names(clients.consumer.assignment()) if clients is not None else [],
            # Ask the broker only once the consumer has started: before that aiokafka has no
            # bootstrap metadata and logs an error for every probe.
            "kafka": self._running and clients is not None and await self._kafka_answers(clients.consumer),
        }
        if clients is not None and clients.redis is not None:
            try:
                checks["redis"] = await asyncio.wait_for(clients.redis.ping(), _DEPENDENCY_TIMEOUT_S)
            except TimeoutError:
                checks["redis"] = False
        ready = bool(
            checks["running"]
            and checks["model"]
            and checks["partitions"]
            and checks["kafka"]
            and checks.get("redis", True)
        )
        self.metrics.ready.set(1 if ready else 0)
        self._readiness_cache = (time.monotonic(), ready, checks)
        return ready, checks

    @staticmethod
    async def _kafka_answers(consumer: AIOKafkaConsumer) -> bool:
        try:
            await asyncio.wait_for(consumer.topics(), _DEPENDENCY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.debug("Kafka metadata request failed: %s", exc)
            return False
        return True

    # -- fetch stage ----------------------------------------------------------------------------
    def _batch_started(self) -> None:
        self._in_flight += 1
        self._idle.clear()
        if self._in_flight >= self.settings.batching.max_in_flight_batches:
            self._has_room.clear()

    def _batch_finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight < self.settings.batching.max_in_flight_batches:
            self._has_room.set()
        if self._in_flight == 0:
            self._idle.set()

    async def _fetch_loop(self) -> None:
        consumer = self.clients.consumer
        b = self.settings.batching
        batcher = MicroBatcher(
            consumer,
            max_batch_size=b.max_batch_size,
            max_wait_ms=b.max_wait_ms,
            generation=lambda: self._generation,
        )
        backoff = self.settings.service.retry_initial_backoff_s
        while not self._stop_requested.is_set():
            try:
                if not self._has_room.is_set():
                    await self._wait_for_room(consumer)
                    continue
                paused = consumer.paused()
                if paused:
                    consumer.resume(*paused)
                generation, records = await batcher.next_batch()
                if records:
                    self._enqueue(records, generation)
                backoff = self.settings.service.retry_initial_backoff_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.errors.labels(kind="fetch").inc()
                if not is_transient(exc):
                    raise
                log.warning("fetching failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(self.settings.service.retry_max_backoff_s, backoff * 2)

    async def _wait_for_room(self, consumer: AIOKafkaConsumer) -> None:
        """Back-pressure: pause every partition until a batch commits, polling meanwhile."""
        assignment = consumer.assignment()
        if assignment:
            consumer.pause(*assignment)
        try:
            await asyncio.wait_for(self._has_room.wait(), _PAUSED_POLL_S)
        except TimeoutError:
            pass
        # The poll keeps the member active; paused partitions return nothing, but a partition
        # assigned since the pause could, so whatever comes back is processed, never dropped.
        fetched = await consumer.getmany(timeout_ms=0, max_records=self.settings.batching.max_batch_size)
        records = [r for partition_records in fetched.values() for r in partition_records]
        if records:
            self._enqueue(records, self._generation)

    def _enqueue(self, records: list[Any], generation: int) -> None:
        batch = decode_batch(
            records, max_message_bytes=self.settings.batching.max_message_bytes, generation=generation
        )
        self.metrics.messages_in.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        if batch.articles:
            batch.inference = asyncio.get_running_loop().run_in_executor(
                self.clients.executor, _infer, self.predictor, batch.articles, batch.sources
            )
        self._batch_started()
        self._queue.put_nowait(batch)

    # -- publish stage --------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                await self._process(batch)
            finally:
                self._batch_finished()

    async def _process(self, batch: Batch) -> None:
        if batch.generation != self._generation:
            log.info("dropping a batch fetched before a rebalance", extra=batch.describe())
            if batch.inference is not None:
                await asyncio.gather(batch.inference, return_exceptions=True)
            return
        outcomes: list[Outcome] = []
        if batch.inference is not None:
            outcomes, seconds = await batch.inference
            self.metrics.inference_seconds.observe(seconds)
        results, timestamps, letters = batch.split(outcomes)
        log_dead_letters(letters)

        if self._eos:
            await self._publish_eos(batch, results, letters)
        else:
            await self._publish(results, letters)
            await self._commit(batch)

        now = time.time()
        self.metrics.messages_out.inc(len(results))
        for letter in letters:
            self.metrics.dead_lettered.labels(error_class=letter.error_class).inc()
        for stamp in timestamps:
            self.metrics.end_to_end_seconds.observe(max(0.0, now - stamp / 1000))
        self._update_lag(batch)
        log.debug(
            "batch done: %d results, %d dead letters", len(results), len(letters), extra=batch.describe()
        )

    def _retry(self, operation: Callable[[], Awaitable[None]], what: str, kind: str) -> Awaitable[None]:
        service = self.settings.service
        return retry_transient(
            operation,
            what=what,
            initial_backoff_s=service.retry_initial_backoff_s,
            max_backoff_s=service.retry_max_backoff_s,
            on_error=lambda exc: self.metrics.errors.labels(kind=kind).inc(),
        )

    async def _publish(self, results: list[ClassificationResult], letters: list[DeadLetter]) -> None:
        clients = self.clients
        await publish_with_retries(
            results,
            letters,
            results_sink=clients.results,
            letters_sink=clients.dead_letters,
            redis=clients.redis,
            service=self.settings.service,
            on_error=lambda kind, exc: self.metrics.errors.labels(kind=kind).inc(),
        )

    def _offsets_to_commit(self, batch: Batch) -> dict[TopicPartition, int]:
        assigned = self.clients.consumer.assignment()
        return {tp: offset for tp, offset in batch.commit_offsets.items() if tp in assigned}

    async def _commit(self, batch: Batch) -> None:
        consumer = self.clients.consumer
        if batch.generation != self._generation:
            log.info("not committing a batch abandoned in a rebalance", extra=batch.describe())
            return
        offsets = self._offsets_to_commit(batch)
        if not offsets:
            return
        try:
            await self._retry(lambda: consumer.commit(offsets), "committing offsets", "commit")
        except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError) as exc:
            # The group moved on: whoever owns these partitions now resumes from the last
            # committed offset, which repeats this batch's results (at-least-once).
            log.warning("commit failed after a rebalance: %s", exc, extra=batch.describe())

    async def _publish_eos(
        self, batch: Batch, results: list[ClassificationResult], letters: list[DeadLetter]
    ) -> None:
        """Exactly-once: results, dead letters and input offsets commit in one transaction.

        Redis is written first (idempotent upserts, outside the transaction). A failed
        transaction is aborted and, for a transient error, the same batch is retried in a new
        transaction from memory: the batch's offsets are part of the transaction, so nothing is
        skipped and nothing is published twice. A non-transient error (fenced by a newer
        instance, authorization) stops the service; the next owner resumes at the last
        committed transaction.
        """
        clients = self.clients
        producer = clients.producer
        if results and clients.redis is not None:
            redis = clients.redis
            await self._retry(lambda: redis.write_batch(results), "writing results to Redis", "redis")
        group_id = self.settings.kafka.group_id
        service = self.settings.service
        backoff = service.retry_initial_backoff_s
        while True:
            if batch.generation != self._generation:
                log.info("not committing a batch abandoned in a rebalance", extra=batch.describe())
                return
            offsets = self._offsets_to_commit(batch)
            try:
                await producer.begin_transaction()
                try:
                    steps = []
                    if results:
                        steps.append(clients.results.send_batch(results))
                    if letters:
                        steps.append(clients.dead_letters.send_batch(letters))
                    await _all(steps)
                    if offsets:
                        await producer.send_offsets_to_transaction(offsets, group_id)
                    await producer.commit_transaction()
                    return
                except BaseException:
                    await self._abort(producer)
                    raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.errors.labels(kind="transaction").inc()
                if isinstance(exc, kafka_errors.ProducerFenced) or not is_transient(exc):
                    raise ServiceError(
                        f"exactly-once transaction failed for good ({type(exc).__name__}: {exc}); stopping so that the "
                        "partition's next owner resumes from the last committed transaction"
                    ) from exc
                log.warning(
                    "transaction aborted (%s: %s); retrying the batch in %.1f s",
                    type(exc).__name__,
                    exc,
                    backoff,
                    extra=batch.describe(),
                )
                await asyncio.sleep(backoff)
                backoff = min(service.retry_max_backoff_s, backoff * 2)

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        # Bounded, so a shutdown with Kafka away still ends; an abort that does not complete is
        # finished by the broker (transaction timeout) or by the next instance's fencing.
        try:
            await asyncio.wait_for(producer.abort_transaction(), _ABORT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the original error is what matters
            log.warning("aborting the transaction failed: %s: %s", type(exc).__name__, exc)

    def _update_lag(self, batch: Batch) -> None:
        if self._clients is None:
            return
        consumer = self._clients.consumer
        for tp, committed in batch.commit_offsets.items():
            highwater = consumer.highwater(tp) if tp in consumer.assignment() else None
            if highwater is not None:
                self.metrics.set_lag(tp.topic, tp.partition, highwater - committed)

    # -- rebalancing ----------------------------------------------------------------------------
    async def _wait_idle(self, publish: asyncio.Task[None] | None, *, within: float) -> None:
        """Wait until no batch is in flight, the publish stage has died, a second stop request,
        or ``within`` seconds."""
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._idle.wait()),
            asyncio.ensure_future(self._abandon.wait()),
        }
        if publish is not None:
            waiters.add(publish)
        try:
            await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                if waiter is not publish:
                    waiter.cancel()

    async def _on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish and commit in-flight batches before the partitions move; abandon after the grace."""
        if not revoked:
            return
        log.info(
            "partitions revoked: finishing %d in-flight batches",
            self._in_flight,
            extra={"partitions": _names(revoked)},
        )
        if self._publish_task is not None and not self._publish_task.done():
            await self._wait_idle(self._publish_task, within=self.settings.service.shutdown_grace_s)
        if not self._idle.is_set():
            log.warning(
                "abandoning %d in-flight batches after a rebalance (they will be reprocessed)",
                self._in_flight,
            )
        self._generation += 1
        for tp in revoked:
            self.metrics.forget_partition(tp.topic, tp.partition)

    def _on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._readiness_cache = None
        log.info(
            "partitions assigned",
            extra={"partitions": _names(assigned)},
        )


async def publish_with_retries(
    results: Sequence[ClassificationResult],
    letters: Sequence[DeadLetter],
    *,
    results_sink: KafkaResultSink,
    letters_sink: DeadLetterSink,
    redis: RedisResultSink | None,
    service: ServiceSettings,
    on_error: Callable[[str, BaseException], None] | None = None,
) -> None:
    """At-least-once publication of one batch: results to Kafka and Redis, dead letters to the DLQ.

    The sinks run concurrently and each is retried on its own until acknowledged (so a Redis
    outage does not re-send the Kafka records); a non-transient error is raised at once.
    ``on_error(kind, exc)`` sees every failure, with kind ``kafka`` or ``redis``.
    """

    def retry(operation: Callable[[], Awaitable[None]], what: str, kind: str) -> Awaitable[None]:
        return retry_transient(
            operation,
            what=what,
            initial_backoff_s=service.retry_initial_backoff_s,
            max_backoff_s=service.retry_max_backoff_s,
            on_error=(lambda exc: on_error(kind, exc)) if on_error is not None else None,
        )

    steps = []
    if results:
        steps.append(retry(lambda: results_sink.send_batch(results), "publishing results", "kafka"))
        if redis is not None:
            steps.append(retry(lambda: redis.write_batch(results), "writing results to Redis", "redis"))
    if letters:
        steps.append(retry(lambda: letters_sink.send_batch(letters), "publishing dead letters", "kafka"))
    await _all(steps)


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}-{tp.partition}" for tp in partitions)


async def _all(steps: Sequence[Awaitable[None]]) -> None:
    """Await every step concurrently; on the first failure cancel the rest and raise it."""
    if not steps:
        return
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
