"""Fault injection: real articles through real `newsmtl serve` processes, a real broker, a real Redis.

Each scenario streams ``NEWSMTL_FAULTS_N`` articles (see conftest), injects one kind of fault while
the service is busy, lets it drain, then checks *by article id* that every input reached the
topics topic, the styles topic and Redis (lost), and counts the repeats (duplicated). Waits are
polls with deadlines; the only fixed wait is the 10 s Redis outage, which is the fault itself.
"""

from __future__ import annotations

import asyncio
import base64
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from newsmtl._settings import load_settings
from newsmtl.schemas import DeadLetter
from tests.faults._harness import (
    SMALL_MAX_BYTES,
    DedicatedRedis,
    Fleet,
    HeldStream,
    OffsetProbe,
    assigned_partitions,
    audit_outputs,
    committed_offsets,
    first_output_after,
    metric_total,
    metrics_text,
    poison_corpus,
    reach,
    readyz,
    serve_args,
    serve_env,
    started_count,
    wait_complete,
)
from tests.faults.conftest import Recorder, scenario_timeout
from tests.fixtures.kafka_utils import poll_until, produce_messages, unique_name
from tests.fixtures.services import Endpoints, LocalServices
from tests.service._helpers import Stream, article_messages, read_topic, wait_for_keys

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

TIMEOUT = scenario_timeout()
# Each scenario reads its own slice of the corpus (33,855 articles), so the six differ.
CORPUS = 33_855


def _skip(index: int, n: int) -> int:
    return (index * 5_000) % max(1, CORPUS - n)


def _bound() -> tuple[int, int, int]:
    """max_in_flight_batches, max_batch_size and their product, as the service will read them."""
    batching = load_settings().batching
    return (
        batching.max_in_flight_batches,
        batching.max_batch_size,
        (batching.max_in_flight_batches * batching.max_batch_size),
    )


def _produce(bootstrap: str, topic: str, messages: list[Any]) -> asyncio.Task[Any]:
    """Stream ``messages`` into ``topic`` in the background (the service is consuming meanwhile)."""
    return asyncio.create_task(produce_messages(bootstrap, topic, messages, timeout=300))


# ----------------------------------------------------------------------------- 1. SIGKILL x3


@pytest.mark.timeout(TIMEOUT)
async def test_service_sigkilled_three_times_loses_nothing(
    kafka_bootstrap: str,
    redis_url: str,
    redis_client: Any,
    bundle: Any,
    n_articles: int,
    seed: int,
    fault_report: Recorder,
    fault_stream: Callable[..., Awaitable[Stream]],
) -> None:
    stream = await fault_stream(kafka_bootstrap, partitions=3)
    messages = article_messages(n_articles, skip=_skip(0, n_articles))
    keys = {k for k, _ in messages}
    in_flight, batch_size, per_crash = _bound()
    rng = random.Random(seed)
    # Three kill points at seeded random places in the first ~40% of the stream; the last quarter
    # is held back until the kills are done, so every kill lands while there is input to come.
    points = [rng.uniform(0.05 + 0.13 * i, 0.15 + 0.13 * i) for i in range(3)]
    fleet = Fleet(
        serve_args(stream, bundle=bundle, bootstrap=kafka_bootstrap, redis_url=redis_url), serve_env(stream)
    )
    kills: list[dict[str, Any]] = []
    producing = HeldStream(kafka_bootstrap, stream.input, messages, hold=n_articles - n_articles // 4)
    try:
        producing.start()
        member = await fleet.launch()
        async with OffsetProbe(kafka_bootstrap, [stream.topics, stream.input]) as probe:
            for point in points:
                target = int(point * n_articles)
                seen = await probe.reach(stream.topics, target, timeout=TIMEOUT / 2, fleet=fleet)
                # A seeded random moment within about one batch cycle (inference, publish or
                # commit), not a wait for anything: else every kill would land just after an output.
                await asyncio.sleep(rng.uniform(0.0, 0.1))
                await member.kill()
                assert member.process is not None and member.process.returncode == -signal.SIGKILL
                committed = sum((await committed_offsets(kafka_bootstrap, stream.group)).values())
                written = await probe.count(stream.topics)
                # Mid-stream: input was waiting that the group had not committed.
                arrived = await probe.count(stream.input)
                assert committed < arrived, "the service had drained its input before the kill"
                restarted_at = time.time()
                member = await fleet.launch()
                kills.append(
                    {
                        "at_fraction": round(point, 3),
                        "outputs_before_kill": seen,
                        "outputs_at_kill": written,
                        "committed_at_kill": committed,
                        "restarted_at": restarted_at,
                        "ready_after_s": round(time.time() - restarted_at, 2),
                    }
                )
        await producing.finish()
        await wait_complete(kafka_bootstrap, stream, keys, timeout=TIMEOUT / 2, fleet=fleet)
        member.send(signal.SIGTERM)
        assert await member.wait(timeout=90) == 0, member.tail()
    finally:
        await producing.close()
        await fleet.close()

    audit = await audit_outputs(
        kafka_bootstrap,
        stream,
        {k.decode() for k in keys},
        redis_client,
        scenario="service SIGKILL x3",
        messages=len(messages),
    )
    recoveries = [first_output_after(audit.topic_records, kill["restarted_at"]) for kill in kills]
    audit.recovery_s = max((r for r in recoveries if r is not None), default=None)
    bound = 3 * per_crash
    audit.details.update(
        kills=[
            {**kill, "first_output_after_restart_s": r} for kill, r in zip(kills, recoveries, strict=True)
        ],
        duplicate_bound=bound,
        max_in_flight_batches=in_flight,
        max_batch_size=batch_size,
        recovery="restart of the process -> its first output record (model load + group join)",
    )
    fault_report.record(audit)
    assert audit.lost == 0, audit.details
    assert audit.details["unexpected"] == {"topics": 0, "styles": 0}
    # Each crash repeats at most the batches that were in flight (published, not yet committed).
    assert audit.details["duplicates"]["topics"] <= bound, audit.details
    assert audit.details["duplicates"]["styles"] <= bound, audit.details


# ----------------------------------------------------------------------------- 2. broker SIGKILL


@pytest.mark.timeout(TIMEOUT)
async def test_broker_sigkilled_and_restarted_service_recovers_without_restart(
    dedicated_services: tuple[LocalServices, Endpoints],
    bundle: Any,
    n_articles: int,
    fault_report: Recorder,
    fault_stream: Callable[..., Awaitable[Stream]],
) -> None:
    services, endpoints = dedicated_services
    bootstrap = endpoints.kafka_bootstrap
    stream = await fault_stream(bootstrap, partitions=3)
    messages = article_messages(n_articles, skip=_skip(1, n_articles))
    first, second = messages[: n_articles // 2], messages[n_articles // 2 :]
    keys = {k for k, _ in messages}
    await produce_messages(bootstrap, stream.input, first, timeout=300)
    fleet = Fleet(
        serve_args(stream, bundle=bundle, bootstrap=bootstrap, redis_url=endpoints.redis_url),
        serve_env(stream),
    )
    try:
        member = await fleet.launch()
        assert member.process is not None and member.port is not None
        pid, port = member.process.pid, member.port
        seen = await reach(bootstrap, stream.topics, len(first) // 3, timeout=TIMEOUT / 3, fleet=fleet)
        assert seen < len(first), "the backlog was drained before the broker died"

        await asyncio.to_thread(services.kafka_kill)
        killed_at = time.monotonic()

        async def not_ready() -> bool:
            return await readyz(port) is False

        await poll_until(not_ready, timeout=60, interval=0.2, what="/readyz to turn false")
        unready_after_s = time.monotonic() - killed_at

        await asyncio.to_thread(services.kafka_start)
        back_at, back_at_wall = time.monotonic(), time.time()
        down_s = back_at - killed_at

        async def ready() -> bool:
            return await readyz(port) is True

        try:
            await poll_until(ready, timeout=180, interval=0.2, what="/readyz to turn true again")
        except TimeoutError as exc:
            raise TimeoutError("%s\n%s" % (exc, fleet.logs(200))) from None
        ready_again_s = time.monotonic() - back_at

        # The stream goes on after the broker is back.
        await produce_messages(bootstrap, stream.input, second, timeout=300)
        await wait_complete(bootstrap, stream, keys, timeout=TIMEOUT / 2, fleet=fleet)
        # Recovered on its own: the same process, started once, never exited.
        assert member.process.returncode is None, fleet.logs()
        assert member.process.pid == pid
        assert started_count(member) == 1, fleet.logs()
        member.send(signal.SIGTERM)
        assert await member.wait(timeout=90) == 0, member.tail()
    finally:
        await fleet.close()

    client = aioredis.from_url(endpoints.redis_url)
    try:
        audit = await audit_outputs(
            bootstrap,
            stream,
            {k.decode() for k in keys},
            client,
            scenario="broker SIGKILL + restart",
            messages=len(messages),
        )
    finally:
        await client.aclose()
    audit.recovery_s = first_output_after(audit.topic_records, back_at_wall)
    audit.details.update(
        outputs_before_kill=seen,
        broker_down_s=round(down_s, 1),
        readyz_false_after_kill_s=round(unready_after_s, 2),
        readyz_true_after_broker_back_s=round(ready_again_s, 2),
        recovery="broker answering again -> first output record",
    )
    fault_report.record(audit)
    assert audit.lost == 0, audit.details
    assert audit.details["unexpected"] == {"topics": 0, "styles": 0}


# ----------------------------------------------------------------------------- 3. Redis outage

REDIS_OUTAGE_S = 10.0


@pytest.mark.timeout(TIMEOUT)
async def test_redis_outage_commits_no_offsets_and_the_backlog_drains(
    kafka_bootstrap: str,
    dedicated_redis: DedicatedRedis,
    bundle: Any,
    n_articles: int,
    fault_report: Recorder,
    fault_stream: Callable[..., Awaitable[Stream]],
) -> None:
    stream = await fault_stream(kafka_bootstrap, partitions=3)
    messages = article_messages(n_articles, skip=_skip(2, n_articles))
    keys = {k for k, _ in messages}
    fleet = Fleet(
        serve_args(stream, bundle=bundle, bootstrap=kafka_bootstrap, redis_url=dedicated_redis.url),
        serve_env(stream),
    )
    try:
        producing = _produce(kafka_bootstrap, stream.input, messages)
        member = await fleet.launch()
        assert member.port is not None
        port = member.port
        seen = await reach(kafka_bootstrap, stream.topics, n_articles // 4, timeout=TIMEOUT / 3, fleet=fleet)

        await asyncio.to_thread(dedicated_redis.kill)
        down_at = time.monotonic()

        async def redis_errors() -> float | None:
            value = metric_total(await metrics_text(port), "newsmtl_errors_total", kind="redis")
            return value if value > 0 else None

        # Once a Redis write has failed, the batch it belongs to cannot commit, and no later one may.
        await poll_until(redis_errors, timeout=REDIS_OUTAGE_S, interval=0.1, what="a failed Redis write")
        noticed_s = time.monotonic() - down_at
        snapshot = await committed_offsets(kafka_bootstrap, stream.group)
        assert sum(snapshot.values()) < n_articles, "nothing was left to commit: the check would be empty"
        probes, unready_seen = 0, False
        while time.monotonic() - down_at < REDIS_OUTAGE_S:  # the outage itself, watched throughout
            assert await committed_offsets(kafka_bootstrap, stream.group) == snapshot, (
                "offsets were committed while Redis was down"
            )
            unready_seen |= await readyz(port) is False
            probes += 1
            await asyncio.sleep(0.25)
        assert probes >= 5
        assert unready_seen, "/readyz never said not ready while Redis was down"

        await dedicated_redis.start()
        back_at = time.time()
        outage_s = time.monotonic() - down_at
        await producing
        await wait_complete(kafka_bootstrap, stream, keys, timeout=TIMEOUT / 2, fleet=fleet)
        assert member.process is not None and member.process.returncode is None
        assert started_count(member) == 1, fleet.logs()
        drained = sum((await committed_offsets(kafka_bootstrap, stream.group)).values())
        member.send(signal.SIGTERM)
        assert await member.wait(timeout=90) == 0, member.tail()
    finally:
        await fleet.close()

    client = aioredis.from_url(dedicated_redis.url)
    try:
        audit = await audit_outputs(
            kafka_bootstrap,
            stream,
            {k.decode() for k in keys},
            client,
            scenario="Redis down 10 s",
            messages=len(messages),
        )
    finally:
        await client.aclose()
    audit.recovery_s = first_output_after(audit.topic_records, back_at)
    audit.details.update(
        outputs_before_outage=seen,
        outage_s=round(outage_s, 1),
        failure_noticed_after_s=round(noticed_s, 2),
        committed_during_outage=sum(snapshot.values()),
        committed_offset_probes=probes,
        committed_after_drain=drained,
        recovery="Redis answering again -> first output record",
    )
    fault_report.record(audit)
    assert drained == n_articles
    assert audit.lost == 0, audit.details
    assert audit.details["unexpected"] == {"topics": 0, "styles": 0}


# ----------------------------------------------------------------------------- 4. 1 -> 3 -> 1


@pytest.mark.timeout(TIMEOUT)
async def test_group_scales_one_three_one_loses_nothing(
    kafka_bootstrap: str,
    redis_url: str,
    redis_client: Any,
    bundle: Any,
    n_articles: int,
    fault_report: Recorder,
    fault_stream: Callable[..., Awaitable[Stream]],
) -> None:
    partitions = 6
    stream = await fault_stream(kafka_bootstrap, partitions=partitions)
    messages = article_messages(n_articles, skip=_skip(3, n_articles))
    third = n_articles // 3
    chunks = [messages[:third], messages[third : 2 * third], messages[2 * third :]]
    keys = {k for k, _ in messages}
    in_flight, batch_size, per_change = _bound()
    fleet = Fleet(
        serve_args(stream, bundle=bundle, bootstrap=kafka_bootstrap, redis_url=redis_url), serve_env(stream)
    )
    every = sorted("%s-%d" % (stream.input, p) for p in range(partitions))
    try:
        await produce_messages(kafka_bootstrap, stream.input, chunks[0], timeout=300)
        first = await fleet.launch()
        await reach(kafka_bootstrap, stream.topics, third // 3, timeout=TIMEOUT / 3, fleet=fleet)

        # Scale up while the stream goes on.
        producing = _produce(kafka_bootstrap, stream.input, chunks[1])
        extra = [await fleet.launch(wait=False) for _ in range(2)]
        for member in extra:
            await member.wait_ready(timeout=180)
        members = [first, *extra]

        async def spread() -> bool:
            owned = [await assigned_partitions(m.port) for m in members if m.port is not None]
            return (
                len(owned) == 3
                and all(owned)
                and sorted(p for parts in owned if parts for p in parts) == every
            )

        await poll_until(spread, timeout=120, interval=0.3, what="6 partitions spread over 3 members")
        scaled_up_at = time.time()
        await producing
        await reach(kafka_bootstrap, stream.topics, third + third // 2, timeout=TIMEOUT / 3, fleet=fleet)

        # Scale down while the stream goes on.
        producing = _produce(kafka_bootstrap, stream.input, chunks[2])
        for member in extra:
            member.send(signal.SIGTERM)
        for member in extra:
            assert await member.wait(timeout=90) == 0, member.tail()
        scaled_down_at = time.time()
        assert first.port is not None
        first_port = first.port

        async def back_to_one() -> bool:
            return await assigned_partitions(first_port) == every

        await poll_until(
            back_to_one, timeout=120, interval=0.3, what="the last member to own every partition"
        )
        await producing
        await wait_complete(kafka_bootstrap, stream, keys, timeout=TIMEOUT / 2, fleet=fleet)
        first.send(signal.SIGTERM)
        assert await first.wait(timeout=90) == 0, first.tail()
    finally:
        await fleet.close()

    audit = await audit_outputs(
        kafka_bootstrap,
        stream,
        {k.decode() for k in keys},
        redis_client,
        scenario="group 1 -> 3 -> 1",
        messages=len(messages),
    )
    audit.recovery_s = first_output_after(audit.topic_records, scaled_down_at)
    # Four membership changes (two joins, two leaves); each may repeat at most the in-flight batches.
    bound = 4 * per_change
    audit.details.update(
        partitions=partitions,
        scale_up_to_scale_down_s=round(scaled_down_at - scaled_up_at, 1),
        duplicate_bound=bound,
        recovery="two members gone -> first output record",
    )
    fault_report.record(audit)
    assert audit.lost == 0, audit.details
    assert audit.details["unexpected"] == {"topics": 0, "styles": 0}
    assert audit.duplicated <= bound, audit.details


# ----------------------------------------------------------------------------- 5. poison corpus


@pytest.mark.timeout(TIMEOUT)
async def test_poison_corpus_goes_to_the_dlq_and_the_service_never_restarts(
    kafka_bootstrap: str,
    redis_url: str,
    redis_client: Any,
    bundle: Any,
    n_articles: int,
    seed: int,
    fault_report: Recorder,
    fault_stream: Callable[..., Awaitable[Stream]],
) -> None:
    stream = await fault_stream(kafka_bootstrap, partitions=3)
    valid = article_messages(n_articles, skip=_skip(4, n_articles))
    assert max(len(v) for _, v in valid) < SMALL_MAX_BYTES, "a real article would be oversize"
    poison = poison_corpus(repeat=max(2, n_articles // 500))
    kinds = {kind for kind, _, _ in poison}
    assert len(kinds) >= 20
    mixed: list[tuple[str, bytes, bytes | None]] = [("valid", k, v) for k, v in valid] + poison
    random.Random(seed).shuffle(mixed)
    keys = {k for k, _ in valid}
    poison_keys = {k for _, k, _ in poison}
    fleet = Fleet(
        serve_args(stream, bundle=bundle, bootstrap=kafka_bootstrap, redis_url=redis_url),
        serve_env(stream, NEWSMTL_BATCHING__MAX_MESSAGE_BYTES=str(SMALL_MAX_BYTES)),
    )
    try:
        producing = _produce(kafka_bootstrap, stream.input, [(k, v) for _, k, v in mixed])
        member = await fleet.launch()
        assert member.process is not None and member.port is not None
        pid = member.process.pid
        metadata = await producing
        sent = {
            (md.partition, md.offset): (kind, key, value)
            for (kind, key, value), md in zip(mixed, metadata, strict=True)
        }
        await wait_complete(kafka_bootstrap, stream, keys, timeout=TIMEOUT / 2, fleet=fleet)
        dlq_records = await wait_for_keys(kafka_bootstrap, stream.dlq, poison_keys, timeout=120)
        metrics = await metrics_text(member.port)
        # Never restarted: the same process, which started once and is still running.
        assert member.process.returncode is None and member.process.pid == pid, fleet.logs()
        assert started_count(member) == 1, fleet.logs()
        member.send(signal.SIGTERM)
        assert await member.wait(timeout=90) == 0, member.tail()
    finally:
        await fleet.close()

    audit = await audit_outputs(
        kafka_bootstrap,
        stream,
        {k.decode() for k in keys},
        redis_client,
        scenario="poison corpus (%d kinds)" % len(kinds),
        messages=len(mixed),
    )
    letters = Counter(r.key for r in dlq_records)
    classes: Counter[str] = Counter()
    mismatched = []
    for record in dlq_records:
        letter = DeadLetter.model_validate_json(record.value)
        assert letter.reason.strip() and letter.error_class, letter
        assert letter.source is not None and letter.source.kind == "kafka"
        assert letter.source.topic == stream.input
        kind, key, value = sent[(letter.source.partition, letter.source.offset)]
        if record.key != key or base64.b64decode(letter.original_base64) != (value or b""):
            mismatched.append(kind)
        assert dict(record.headers)["newsmtl-error-class"] == letter.error_class.encode()
        classes[letter.error_class] += 1
    missing_letters = len(poison_keys - set(letters))
    dlq_duplicates = sum(n - 1 for n in letters.values() if n > 1)
    audit.lost += missing_letters
    audit.duplicated = max(audit.duplicated, dlq_duplicates)
    audit.details.update(
        poison_messages=len(poison),
        poison_kinds=len(kinds),
        dead_letters=len(dlq_records),
        dlq_missing=missing_letters,
        dlq_duplicates=dlq_duplicates,
        error_classes=dict(sorted(classes.items())),
        dead_lettered_metric=metric_total(metrics, "newsmtl_messages_dead_lettered_total"),
        same_pid=True,
    )
    fault_report.record(audit)
    assert not mismatched, "dead letters that do not carry their original message: %s" % mismatched
    assert missing_letters == 0, audit.details
    assert audit.lost == 0, audit.details
    assert audit.details["unexpected"] == {"topics": 0, "styles": 0}, "a poison message was classified"
    assert audit.details["dead_lettered_metric"] == len(poison)
    assert len(classes) >= 6, classes


# ----------------------------------------------------------------------------- 6. exactly-once


@pytest.mark.timeout(TIMEOUT)
async def test_exactly_once_sigkill_mid_transaction_no_duplicates_no_losses(
    kafka_bootstrap: str,
    redis_url: str,
    redis_client: Any,
    bundle: Any,
    n_articles: int,
    seed: int,
    fault_report: Recorder,
    fault_stream: Callable[..., Awaitable[Stream]],
) -> None:
    stream = await fault_stream(kafka_bootstrap, partitions=3)
    valid = article_messages(n_articles, skip=_skip(5, n_articles))
    assert max(len(v) for _, v in valid) < SMALL_MAX_BYTES, "a real article would be oversize"
    poison = [(k, v) for _, k, v in poison_corpus(repeat=1)]
    keys = {k for k, _ in valid}
    poison_keys = {k for k, _ in poison}
    mixed = valid + poison
    random.Random(seed + 6).shuffle(mixed)
    # A stable member id: the restarted process reuses the transactional id, fences the killed
    # one and aborts its open transaction at once.
    args = serve_args(
        stream,
        bundle=bundle,
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        extra=["--exactly-once", "--group-instance-id", unique_name("eos-member")],
    )
    fleet = Fleet(args, serve_env(stream, NEWSMTL_BATCHING__MAX_MESSAGE_BYTES=str(SMALL_MAX_BYTES)))
    outputs = (stream.topics, stream.styles, stream.dlq)
    rng = random.Random(seed + 6)
    target = int(rng.uniform(0.15, 0.35) * n_articles)
    attempts: list[dict[str, Any]] = []
    try:
        producing = _produce(kafka_bootstrap, stream.input, mixed)
        member = await fleet.launch()
        mid_transaction = False
        async with OffsetProbe(kafka_bootstrap, [*outputs, stream.input]) as probe:
            while not mid_transaction and len(attempts) < 3:
                seen = await probe.reach(stream.topics, target, timeout=TIMEOUT / 3, fleet=fleet)
                # SIGKILL the moment a transaction is seen open (records past the last stable offset).
                deadline = time.monotonic() + 60
                while not await probe.open_transaction(outputs):
                    assert time.monotonic() < deadline, "no open transaction seen for 60 s\n" + fleet.logs()
                assert member.process is not None
                member.process.kill()
                await member.kill()
                assert member.process.returncode == -signal.SIGKILL
                # Still open after the kill: the dead producer can neither commit nor abort it.
                mid_transaction = await probe.open_transaction(outputs)
                committed = sum((await committed_offsets(kafka_bootstrap, stream.group)).values())
                assert committed < len(mixed), "the stream was over before the kill"
                restarted_at = time.time()
                member = await fleet.launch()
                attempts.append(
                    {
                        "outputs_before_kill": seen,
                        "mid_transaction": mid_transaction,
                        "restarted_at": restarted_at,
                        "ready_after_s": round(time.time() - restarted_at, 2),
                    }
                )
                target = 0  # the next open transaction will do
        assert mid_transaction, "no kill landed inside an open transaction in %d tries" % len(attempts)
        await producing
        await wait_complete(
            kafka_bootstrap, stream, keys, timeout=TIMEOUT / 2, isolation_level="read_committed", fleet=fleet
        )
        await wait_for_keys(
            kafka_bootstrap, stream.dlq, poison_keys, timeout=120, isolation_level="read_committed"
        )
        member.send(signal.SIGTERM)
        assert await member.wait(timeout=90) == 0, member.tail()
    finally:
        await fleet.close()

    ids = {k.decode() for k in keys}
    audit = await audit_outputs(
        kafka_bootstrap,
        stream,
        ids,
        redis_client,
        scenario="exactly-once, SIGKILL mid-txn",
        messages=len(mixed),
        isolation_level="read_committed",
    )
    dlq = Counter(
        r.key for r in await read_topic(kafka_bootstrap, stream.dlq, isolation_level="read_committed")
    )
    raw = Counter(r.key for r in await read_topic(kafka_bootstrap, stream.topics))
    recovery = first_output_after(audit.topic_records, attempts[-1]["restarted_at"])
    audit.recovery_s = recovery
    audit.lost += len(poison_keys - set(dlq))
    audit.duplicated = max(audit.duplicated, sum(n - 1 for n in dlq.values() if n > 1))
    audit.details.update(
        kills=attempts,
        dlq_records=sum(dlq.values()),
        # What a read_uncommitted reader would see: the aborted transaction's records too.
        read_uncommitted_extra_records=sum(n - 1 for n in raw.values() if n > 1),
        recovery="restart of the process -> its first committed output record",
    )
    fault_report.record(audit)
    assert audit.lost == 0, audit.details
    assert audit.duplicated == 0, audit.details
    assert set(dlq) == poison_keys
    assert audit.details["unexpected"] == {"topics": 0, "styles": 0}
