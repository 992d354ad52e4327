"""The streaming service end to end: real broker, real Redis, real ONNX model.

Every test uses fresh topics, groups and key prefixes, and waits by polling (outputs, /readyz)
with deadlines, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from newsmtl.consumer import NewsService, Predictor
from newsmtl.schemas import DeadLetter
from tests.fixtures.kafka_utils import poll_until, produce_messages
from tests.service._helpers import (
    PrivateRedis,
    ServeProcess,
    article_messages,
    committed_offsets,
    decode_style_results,
    decode_topic_results,
    end_offsets,
    free_port,
    http_get,
    poison_messages,
    read_topic,
    redis_results,
    unless_ended,
    wait_for_keys,
    wait_ready,
)
from tests.service.conftest import serve_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run_ended() -> str:
    return "service.run() ended while the test waited"


# A small batching.max_message_bytes lets a test produce an "oversize" message the broker accepts.
SMALL_MAX_BYTES = 65_536

CONTRACT_METRICS = (
    "newsmtl_messages_in_total",
    "newsmtl_messages_out_total",
    "newsmtl_messages_dead_lettered_total",
    "newsmtl_batch_size",
    "newsmtl_inference_seconds",
    "newsmtl_end_to_end_seconds",
    "newsmtl_consumer_lag",
    "newsmtl_errors_total",
    "newsmtl_model_info",
    "newsmtl_ready",
)


def _metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets) in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.timeout(300)
async def test_every_article_is_classified_exactly_once_into_both_topics_and_redis(
    kafka_bootstrap: str,
    make_stream: Callable[..., Any],
    make_settings: Callable[..., Any],
    predictor: Predictor,
    redis_client: Any,
) -> None:
    stream = await make_stream(partitions=3)
    messages = article_messages(2000)
    metadata = await produce_messages(kafka_bootstrap, stream.input, messages)
    where = {key.decode(): (md.partition, md.offset) for (key, _), md in zip(messages, metadata, strict=True)}
    ids = set(where)
    keys = {key for key, _ in messages}

    settings = make_settings(stream)
    async with NewsService(settings=settings, predictor=predictor) as service:
        run = asyncio.create_task(service.run())
        assert service.http_port is not None
        ready = await wait_ready(service.http_port, timeout=60)
        assert ready["checks"]["redis"] is True and ready["checks"]["kafka"] is True
        await unless_ended(wait_for_keys(kafka_bootstrap, stream.styles, keys, timeout=240), run, _run_ended)
        await unless_ended(wait_for_keys(kafka_bootstrap, stream.topics, keys, timeout=60), run, _run_ended)
        status, body = await http_get(service.http_port, "/healthz")
        assert status == 200
        status, metrics = await http_get(service.http_port, "/metrics")
        assert status == 200
        service.request_stop()
        await asyncio.wait_for(run, 60)

    for name in CONTRACT_METRICS:
        assert name in metrics, name
    assert _metric(metrics, "newsmtl_messages_in_total") == 2000
    assert _metric(metrics, "newsmtl_messages_out_total") == 2000
    assert _metric(metrics, "newsmtl_messages_dead_lettered_total") == 0
    assert _metric(metrics, "newsmtl_batch_size_sum") == 2000
    assert 'model_version="%s"' % predictor.model_version in metrics

    topic_records = await read_topic(kafka_bootstrap, stream.topics)
    style_records = await read_topic(kafka_bootstrap, stream.styles)
    # Exactly once: one record per article in each output topic, keyed by its id.
    assert sorted(r.key.decode() for r in topic_records) == sorted(ids)
    assert sorted(r.key.decode() for r in style_records) == sorted(ids)
    assert await read_topic(kafka_bootstrap, stream.dlq) == []

    topics = decode_topic_results(topic_records)
    styles = decode_style_results(style_records)
    for record, result in zip(topic_records, topics, strict=True):
        assert result.id == record.key.decode()
        assert result.topic in predictor.topic_labels
        assert set(result.topic_scores) == set(predictor.topic_labels)
        assert result.model_version == predictor.model_version
        # The source coordinates name the exact input message.
        assert result.source is not None and result.source.kind == "kafka"
        assert (result.source.partition, result.source.offset) == where[result.id]
        assert result.source.topic == stream.input
        headers = dict(record.headers)
        assert headers["newsmtl-model-version"] == predictor.model_version.encode()
        assert headers["content-type"] == b"application/json"
        assert headers["newsmtl-source-offset"] == str(where[result.id][1]).encode()
    for result in styles:
        assert result.top_style in predictor.publication_labels
        assert set(result.styles) == set(predictor.publication_labels)

    stored = await redis_results(redis_client, stream.redis_prefix, sorted(ids))
    assert set(stored) == ids
    for article_id, result in stored.items():
        assert result.topic.topic in predictor.topic_labels
        assert result.style.top_style in predictor.publication_labels
        assert result.topic.source is not None and result.topic.source.kind == "kafka"
        assert (result.topic.source.partition, result.topic.source.offset) == where[article_id]
    ttl = await redis_client.ttl("%sarticle:%s" % (stream.redis_prefix, next(iter(ids))))
    assert 0 < ttl <= settings.redis.ttl_seconds


@pytest.mark.timeout(300)
async def test_poison_messages_are_dead_lettered_and_valid_ones_classified(
    kafka_bootstrap: str,
    make_stream: Callable[..., Any],
    make_settings: Callable[..., Any],
    predictor: Predictor,
    redis_client: Any,
) -> None:
    stream = await make_stream(partitions=3)
    poison = poison_messages(50, oversize_bytes=SMALL_MAX_BYTES + 1)
    assert len({kind for kind, _, _ in poison}) >= 10
    valid = article_messages(300, skip=2000)
    mixed: list[tuple[str, bytes | None, bytes | None]] = [("valid", k, v) for k, v in valid] + poison
    random.Random(7).shuffle(mixed)
    metadata = await produce_messages(kafka_bootstrap, stream.input, [(k, v) for _, k, v in mixed])
    poison_at = {
        (md.partition, md.offset): (kind, value)
        for (kind, _, value), md in zip(mixed, metadata, strict=True)
        if kind != "valid"
    }
    valid_keys = {k for k, _ in valid}

    settings = make_settings(stream, batching={"max_message_bytes": SMALL_MAX_BYTES, "max_batch_size": 32})
    async with NewsService(settings=settings, predictor=predictor) as service:
        run = asyncio.create_task(service.run())
        await unless_ended(
            wait_for_keys(kafka_bootstrap, stream.topics, valid_keys, timeout=240), run, _run_ended
        )
        await unless_ended(
            wait_for_keys(kafka_bootstrap, stream.styles, valid_keys, timeout=60), run, _run_ended
        )
        assert service.http_port is not None
        poison_keys = {k for _, k, _ in poison}
        dlq_records = await unless_ended(
            wait_for_keys(kafka_bootstrap, stream.dlq, poison_keys, timeout=60), run, _run_ended
        )
        service.request_stop()
        await asyncio.wait_for(run, 60)
        _, metrics = await http_get(service.http_port, "/metrics")
    assert _metric(metrics, "newsmtl_messages_dead_lettered_total") == 50
    assert _metric(metrics, "newsmtl_messages_out_total") == 300
    # Micro-batches close at max_batch_size: every batch falls in the histogram's "<= 32" bucket.
    assert (
        _metric(metrics, 'newsmtl_batch_size_bucket{le="32.0"}')
        == _metric(metrics, "newsmtl_batch_size_count")
        > 0
    )

    assert len(dlq_records) == 50
    kinds_seen = Counter()
    for record in dlq_records:
        letter = DeadLetter.model_validate_json(record.value)
        assert letter.reason and letter.error_class
        assert letter.source is not None and letter.source.kind == "kafka"
        assert letter.source.topic == stream.input
        kind, value = poison_at[(letter.source.partition, letter.source.offset)]
        assert base64.b64decode(letter.original_base64) == (value or b"")
        assert dict(record.headers)["newsmtl-error-class"] == letter.error_class.encode()
        kinds_seen[letter.error_class] += 1
    # The decoder tells the failure classes apart.
    assert {
        "empty",
        "oversize",
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "schema",
    } <= set(kinds_seen)

    topic_records = await read_topic(kafka_bootstrap, stream.topics)
    assert sorted(r.key for r in topic_records) == sorted(valid_keys)
    stored = await redis_results(redis_client, stream.redis_prefix, sorted(k.decode() for k in valid_keys))
    assert len(stored) == len(valid_keys)


@pytest.mark.timeout(300)
async def test_sigterm_mid_stream_drains_commits_and_a_restart_loses_nothing(
    kafka_bootstrap: str,
    make_stream: Callable[..., Any],
    serve_args: Callable[..., list[str]],
    redis_client: Any,
) -> None:
    stream = await make_stream(partitions=3)
    first, second = article_messages(400, skip=2400), article_messages(400, skip=2800)
    await produce_messages(kafka_bootstrap, stream.input, first)
    keys = {k for k, _ in first + second}
    args = serve_args(stream, "--max-batch-size", "8", "--max-wait-ms", "20")

    service = await ServeProcess(args, serve_env(stream)).start()
    try:
        await service.wait_ready(timeout=120)
        await service.guard(wait_for_keys(kafka_bootstrap, stream.topics, keys, timeout=120, minimum=50))
        # The stream goes on while the service shuts down.
        producing = asyncio.create_task(produce_messages(kafka_bootstrap, stream.input, second))
        service.send(signal.SIGTERM)
        code = await service.wait(timeout=60)
        await producing
    finally:
        await service.kill()
    assert code == 0, service.tail()
    assert b"service stopped cleanly" in b"".join(service.log)
    before = {r.key for r in await read_topic(kafka_bootstrap, stream.topics)}
    assert 0 < len(before & keys) < len(keys)

    restarted = await ServeProcess(args, serve_env(stream)).start()
    try:
        await restarted.wait_ready(timeout=120)
        await restarted.guard(wait_for_keys(kafka_bootstrap, stream.topics, keys, timeout=180))
        await restarted.guard(wait_for_keys(kafka_bootstrap, stream.styles, keys, timeout=60))
        restarted.send(signal.SIGTERM)
        assert await restarted.wait(timeout=60) == 0, restarted.tail()
    finally:
        await restarted.kill()

    # A graceful stop commits everything it published, so the restart repeats nothing.
    topic_keys = Counter(r.key for r in await read_topic(kafka_bootstrap, stream.topics))
    assert set(topic_keys) == keys
    assert max(topic_keys.values()) == 1
    stored = await redis_results(redis_client, stream.redis_prefix, sorted(k.decode() for k in keys))
    assert len(stored) == len(keys)


@pytest.mark.timeout(300)
async def test_a_group_member_leaving_mid_stream_loses_nothing(
    kafka_bootstrap: str,
    make_stream: Callable[..., Any],
    make_settings: Callable[..., Any],
    predictor: Predictor,
) -> None:
    stream = await make_stream(partitions=4)
    early, late = article_messages(600, skip=3200), article_messages(600, skip=3800)
    await produce_messages(kafka_bootstrap, stream.input, early)
    keys = {k for k, _ in early + late}
    settings = make_settings(stream, batching={"max_batch_size": 16})

    first = NewsService(settings=settings, predictor=predictor)
    second = NewsService(settings=settings, predictor=predictor)
    await first.start()
    try:
        await second.start()
        runs = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]

        async def both_assigned() -> bool:
            return bool(first.clients.consumer.assignment() and second.clients.consumer.assignment())

        await poll_until(both_assigned, timeout=60, what="both members to get partitions")
        await unless_ended(
            wait_for_keys(kafka_bootstrap, stream.topics, keys, timeout=120, minimum=100), runs[0], _run_ended
        )
        # The stream goes on while one member leaves with batches in flight.
        producing = asyncio.create_task(produce_messages(kafka_bootstrap, stream.input, late))
        second.request_stop()
        await asyncio.wait_for(runs[1], 60)
        await second.stop()
        await producing
        await unless_ended(
            wait_for_keys(kafka_bootstrap, stream.topics, keys, timeout=180), runs[0], _run_ended
        )
        await unless_ended(
            wait_for_keys(kafka_bootstrap, stream.styles, keys, timeout=60), runs[0], _run_ended
        )
        assert len(first.clients.consumer.assignment()) == 4
        first.request_stop()
        await asyncio.wait_for(runs[0], 60)
    finally:
        await second.stop()
        await first.stop()
    assert {r.key for r in await read_topic(kafka_bootstrap, stream.topics)} == keys


@pytest.mark.timeout(300)
async def test_exactly_once_survives_kill_9_mid_transaction(
    kafka_bootstrap: str,
    make_stream: Callable[..., Any],
    serve_args: Callable[..., list[str]],
) -> None:
    stream = await make_stream(partitions=3)
    chunk = 800
    valid = article_messages(chunk, skip=4400)
    poison = [(k, v) for _, k, v in poison_messages(10, oversize_bytes=SMALL_MAX_BYTES + 1)]
    await produce_messages(kafka_bootstrap, stream.input, valid + poison)
    keys = {k for k, _ in valid}
    poison_keys = {k for k, _ in poison}
    # A stable instance id: the restarted process fences its killed predecessor at once.
    args = serve_args(
        stream,
        "--exactly-once",
        "--group-instance-id",
        "eos-member",
        "--max-batch-size",
        "8",
        "--max-wait-ms",
        "20",
    )
    env = serve_env(
        stream,
        NEWSMTL_KAFKA__SESSION_TIMEOUT_MS="10000",
        NEWSMTL_BATCHING__MAX_MESSAGE_BYTES=str(SMALL_MAX_BYTES),
    )

    outputs = (stream.topics, stream.styles, stream.dlq)
    # Kill -9 while a transaction is open: its records are in the log (high watermark) but not
    # below the last stable offset. Only part of the service's time is spent there (records
    # still in the client's buffer, or inference between two transactions, do not count), so a
    # kill that lands elsewhere is retried; attempts are cheap (a static member rejoins at once)
    # and up to 20 of them make a miss on every one vanishingly unlikely. On a fast machine the
    # service can drain the whole backlog between "more are committed" and the kill, so each
    # attempt first makes sure that plenty of input is still waiting.
    kills, killed_mid_transaction, done = 0, False, 0
    while not killed_mid_transaction and kills < 20:
        if len(keys) - done < chunk // 2:
            more = article_messages(chunk, skip=4400 + len(keys))
            await produce_messages(kafka_bootstrap, stream.input, more)
            keys |= {k for k, _ in more}
        service = await ServeProcess(args, env).start()
        try:
            await service.wait_ready(timeout=120)
            await service.guard(
                wait_for_keys(
                    kafka_bootstrap,
                    stream.topics,
                    keys,
                    timeout=120,
                    isolation_level="read_committed",
                    minimum=done + 40,
                )
            )
        finally:
            await service.kill()
        kills += 1
        assert service.process is not None and service.process.returncode == -signal.SIGKILL
        # What is committed now, after the kill (more than when the wait returned).
        committed = await read_topic(kafka_bootstrap, stream.topics, isolation_level="read_committed")
        done = len({r.key for r in committed} & keys)
        for topic in outputs:
            stable = await end_offsets(kafka_bootstrap, topic, isolation_level="read_committed")
            written = await end_offsets(kafka_bootstrap, topic, isolation_level="read_uncommitted")
            killed_mid_transaction |= any(stable[tp] < written[tp] for tp in written)
    assert killed_mid_transaction, "no kill landed inside a transaction"

    restarted = await ServeProcess(args, env).start()
    try:
        await restarted.wait_ready(timeout=120)
        await restarted.guard(
            wait_for_keys(kafka_bootstrap, stream.topics, keys, timeout=180, isolation_level="read_committed")
        )
        await restarted.guard(
            wait_for_keys(
                kafka_bootstrap, stream.dlq, poison_keys, timeout=60, isolation_level="read_committed"
            )
        )
        restarted.send(signal.SIGTERM)
        assert await restarted.wait(timeout=60) == 0, restarted.tail()
    finally:
        await restarted.kill()

    for topic, wanted in ((stream.topics, keys), (stream.styles, keys), (stream.dlq, poison_keys)):
        counted = Counter(
            r.key for r in await read_topic(kafka_bootstrap, topic, isolation_level="read_committed")
        )
        assert set(counted) == wanted, topic
        assert max(counted.values()) == 1, "duplicates in %s: %s" % (
            topic,
            [k for k, n in counted.items() if n > 1][:5],
        )


@pytest.mark.timeout(300)
async def test_faust_worker_classifies_a_stream_end_to_end(
    kafka_bootstrap: str,
    make_stream: Callable[..., Any],
    serve_args: Callable[..., list[str]],
    predictor: Predictor,
    redis_client: Any,
) -> None:
    stream = await make_stream(partitions=2)
    valid = article_messages(200, skip=5200)
    poison = [(k, v) for _, k, v in poison_messages(16, oversize_bytes=SMALL_MAX_BYTES + 1)]
    await produce_messages(kafka_bootstrap, stream.input, valid + poison)
    keys = {k for k, _ in valid}
    args = serve_args(stream, "--max-batch-size", "16", "--max-wait-ms", "50", command="faust-worker")
    env = serve_env(stream, NEWSMTL_BATCHING__MAX_MESSAGE_BYTES=str(SMALL_MAX_BYTES))
    worker = await ServeProcess(args, env).start()
    try:
        topic_records = await worker.guard(wait_for_keys(kafka_bootstrap, stream.topics, keys, timeout=180))
        await worker.guard(wait_for_keys(kafka_bootstrap, stream.styles, keys, timeout=60))
        dlq_records = await worker.guard(
            wait_for_keys(kafka_bootstrap, stream.dlq, {k for k, _ in poison}, timeout=60)
        )
        worker.send(signal.SIGTERM)
        assert await worker.wait(timeout=60) == 0, worker.tail()
    except TimeoutError as exc:
        raise AssertionError("%s\nworker log:\n%s" % (exc, worker.tail(200))) from exc
    finally:
        await worker.kill()
    for result in decode_topic_results([r for r in topic_records if r.key in keys]):
        assert result.topic in predictor.topic_labels
    letters = [DeadLetter.model_validate_json(r.value) for r in dlq_records]
    assert len(letters) == 16
    assert {letter.error_class for letter in letters} >= {"empty", "invalid_json", "oversize", "schema"}
    assert all(letter.reason for letter in letters)
    stored = await redis_results(redis_client, stream.redis_prefix, sorted(k.decode() for k in keys))
    assert set(stored) == {k.decode() for k in keys}


@pytest.mark.timeout(120)
async def test_serve_without_a_reachable_broker_exits_with_a_clear_error(
    make_stream: Callable[..., Any], serve_args: Callable[..., list[str]]
) -> None:
    stream = await make_stream(partitions=1)
    args = serve_args(stream)
    args[args.index("--bootstrap-servers") + 1] = "127.0.0.1:9"  # discard port: nothing listens
    service = await ServeProcess(args, serve_env(stream)).start()
    try:
        code = await service.wait(timeout=90)
    finally:
        await service.kill()
    assert code == 2, service.tail()
    assert "newsmtl: error: Kafka at 127.0.0.1:9 failed" in service.tail()


@pytest.mark.timeout(300)
async def test_a_redis_outage_is_retried_without_committing_or_skipping_anything(
    kafka_bootstrap: str,
    make_stream: Callable[..., Any],
    make_settings: Callable[..., Any],
    predictor: Predictor,
) -> None:
    redis = PrivateRedis(free_port())
    await redis.start()
    stream = await make_stream(partitions=2)
    before, during = article_messages(200, skip=5600), article_messages(200, skip=5800)
    await produce_messages(kafka_bootstrap, stream.input, before)
    settings = make_settings(
        stream,
        redis={"url": redis.url, "socket_timeout_s": 1.0},
        service={"retry_initial_backoff_s": 0.05, "retry_max_backoff_s": 0.5},
        batching={"max_batch_size": 16},
    )
    client = aioredis.from_url(redis.url)
    try:
        async with NewsService(settings=settings, predictor=predictor) as service:
            run = asyncio.create_task(service.run())
            assert service.http_port is not None

            async def committed(count: int) -> bool:
                return await committed_offsets(kafka_bootstrap, stream.group) >= count

            await unless_ended(
                poll_until(lambda: committed(200), timeout=120, what="200 commits"), run, _run_ended
            )
            await redis.stop()
            await produce_messages(kafka_bootstrap, stream.input, during)

            async def redis_errors_counted() -> bool:
                value = service.metrics.registry.get_sample_value("newsmtl_errors_total", {"kind": "redis"})
                return (value or 0) >= 3

            await unless_ended(
                poll_until(redis_errors_counted, timeout=60, what="Redis retries"), run, _run_ended
            )
            # Back-pressure: with the in-flight batches stuck on Redis, the fetch loop pauses every
            # assigned partition instead of reading the other ~136 waiting articles into memory.
            consumer = service.clients.consumer

            async def all_partitions_paused() -> bool:
                assigned = consumer.assignment()
                return bool(assigned) and consumer.paused() == assigned

            await unless_ended(
                poll_until(all_partitions_paused, timeout=60, what="partitions paused"), run, _run_ended
            )
            consumed = service.metrics.registry.get_sample_value("newsmtl_messages_in_total") or 0
            # At most max_in_flight batches, plus the one a paused poll may still return.
            limit = (settings.batching.max_in_flight_batches + 1) * settings.batching.max_batch_size
            assert consumed <= 200 + limit, (consumed, limit)
            # Redis is down: the batch waits, nothing past it is committed, readiness says so.
            assert await committed_offsets(kafka_bootstrap, stream.group) == 200
            status, body = await http_get(service.http_port, "/readyz")
            assert status == 503 and json.loads(body)["checks"]["redis"] is False

            await redis.start()
            await unless_ended(
                poll_until(lambda: committed(400), timeout=120, what="400 commits"), run, _run_ended
            )
            await client.ping()
            service.request_stop()
            await asyncio.wait_for(run, 60)
        # The fresh Redis holds every article classified since it came back: nothing was skipped.
        stored = await redis_results(client, stream.redis_prefix, [k.decode() for k, _ in during])
        assert len(stored) == len(during)
    finally:
        await client.aclose()
        await redis.stop()
    topic_keys = {r.key for r in await read_topic(kafka_bootstrap, stream.topics)}
    assert topic_keys == {k for k, _ in before + during}
