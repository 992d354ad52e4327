"""Kafka-range replays against the real broker (and Redis): offsets, times, sinks, resume."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from newsmtl.schemas import ClassificationResult, StyleResult, TopicResult
from tests.fixtures.kafka_utils import consume_messages, unique_name
from tests.fixtures.services import TopicAdmin
from tests.replay._helpers import CliResult, read_lines, run_cli

pytestmark = pytest.mark.integration

PARTITIONS = 3
PER_PARTITION = 12
BASE_MS = 1_700_000_000_000
BAD = (1, 5)  # (partition, offset) of the one unusable message


def stamp_ms(partition: int, index: int) -> int:
    """Message time: one minute apart within a partition, partitions shifted by a second."""
    return BASE_MS + index * 60_000 + partition * 1_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class History:
    topic: str
    ids: dict[tuple[int, int], str]  # (partition, offset) -> article id, for the valid messages


@pytest.fixture
async def history(kafka_bootstrap: str, kafka_admin: TopicAdmin, articles: list[dict[str, Any]]) -> History:
    topic = await kafka_admin.create("replay-history", partitions=PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    ids: dict[tuple[int, int], str] = {}
    try:
        pool = iter(articles)
        for partition in range(PARTITIONS):
            for index in range(PER_PARTITION):
                if (partition, index) == BAD:
                    value = b'{"id": "bad", "title": 5, "text": "x"}'
                else:
                    # No published_at: the message time becomes classified_at.
                    article = {k: v for k, v in next(pool).items() if k != "published_at"}
                    value = json.dumps(article).encode()
                    ids[(partition, index)] = article["id"]
                meta = await producer.send_and_wait(
                    topic, value=value, partition=partition, timestamp_ms=stamp_ms(partition, index)
                )
                assert meta.offset == index
    finally:
        await producer.stop()
    return History(topic, ids)


async def replay(bundle: Path, bootstrap: str, *args: Any) -> CliResult:
    argv = ["replay", "--bundle", bundle, "--bootstrap-servers", bootstrap, "--no-progress", *args]
    return await asyncio.to_thread(run_cli, argv)


def positions(lines: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(line["topic"]["source"]["partition"], line["topic"]["source"]["offset"]) for line in lines]


async def test_partition_ranges_by_offsets(
    bundle_dir: Path, kafka_bootstrap: str, history: History, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = await replay(
        bundle_dir,
        kafka_bootstrap,
        "--topic",
        history.topic,
        "--output",
        out,
        "--partition-range",
        "2:5-",
        "--partition-range",
        "0:2-7",
    )
    assert result.status == 0, result.err
    lines = read_lines(out)
    expected = [(0, o) for o in range(2, 7)] + [(2, o) for o in range(5, PER_PARTITION)]
    assert positions(lines) == expected  # partitions in ascending order, offsets in order, END exclusive
    for line, (partition, offset) in zip(lines, expected, strict=True):
        assert line["id"] == history.ids[(partition, offset)]
        assert line["topic"]["source"]["topic"] == history.topic
        assert line["topic"]["classified_at"] == iso(stamp_ms(partition, offset))


async def test_offset_range_on_every_partition_with_a_bad_message(
    bundle_dir: Path, kafka_bootstrap: str, history: History, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = await replay(
        bundle_dir,
        kafka_bootstrap,
        "--topic",
        history.topic,
        "--output",
        out,
        "--from-offset",
        3,
        "--to-offset",
        6,
    )
    assert result.status == 1  # the bad message at partition 1, offset 5
    assert positions(read_lines(out)) == [
        (p, o) for p in range(PARTITIONS) for o in range(3, 6) if (p, o) != BAD
    ]
    (error,) = read_lines(tmp_path / "out.jsonl.errors.jsonl")
    assert error["source"] == {"kind": "kafka", "topic": history.topic, "partition": BAD[0], "offset": BAD[1]}
    assert error["error_class"] == "wrong_type" and "title" in error["reason"]


async def test_time_range_via_offsets_for_times(
    bundle_dir: Path, kafka_bootstrap: str, history: History, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = await replay(
        bundle_dir,
        kafka_bootstrap,
        "--topic",
        history.topic,
        "--output",
        out,
        "--from-time",
        iso(BASE_MS + 4 * 60_000),
        "--to-time",
        iso(BASE_MS + 9 * 60_000),
    )
    # Every partition: the messages at or after 4 min and before 9 min, i.e. offsets 4..8.
    expected = [(p, o) for p in range(PARTITIONS) for o in range(4, 9) if (p, o) != BAD]
    assert positions(read_lines(out)) == expected
    assert result.status == 1  # offset 5 of partition 1 is in the window
    later = await replay(
        bundle_dir,
        kafka_bootstrap,
        "--topic",
        history.topic,
        "--output",
        tmp_path / "later.jsonl",
        "--from-time",
        iso(BASE_MS + 10 * 60_000),
    )
    assert later.status == 0
    assert positions(read_lines(tmp_path / "later.jsonl")) == [
        (p, o) for p in range(PARTITIONS) for o in (10, 11)
    ]


async def test_kafka_replay_is_deterministic_and_resumable(
    bundle_dir: Path, kafka_bootstrap: str, history: History, tmp_path: Path
) -> None:
    first, second, resumed = tmp_path / "first.jsonl", tmp_path / "second.jsonl", tmp_path / "resumed.jsonl"
    common = ("--topic", history.topic, "--batch-size", 5)
    await replay(bundle_dir, kafka_bootstrap, *common, "--output", first)
    await replay(bundle_dir, kafka_bootstrap, *common, "--output", second)
    assert first.read_bytes() == second.read_bytes()
    assert len(read_lines(first)) == PARTITIONS * PER_PARTITION - 1

    stopped = await replay(bundle_dir, kafka_bootstrap, *common, "--output", resumed, "--stop-after", 14)
    assert "stopped after 15 records" in stopped.out
    checkpoint = json.loads((tmp_path / "resumed.jsonl.checkpoint.json").read_text())
    # 15 records: all 12 of partition 0, then offsets 0-2 of partition 1.
    assert checkpoint["position"]["next"] == {"0": 12, "1": 3, "2": 0}
    done = await replay(bundle_dir, kafka_bootstrap, *common, "--output", resumed)
    assert "resumed from" in done.out
    assert resumed.read_bytes() == first.read_bytes()


async def test_replay_to_kafka_redis_and_file_together(
    bundle_dir: Path,
    kafka_bootstrap: str,
    kafka_admin: TopicAdmin,
    redis_url: str,
    history: History,
    tmp_path: Path,
) -> None:
    topics_topic = await kafka_admin.create("replay-topics", partitions=1)
    styles_topic = await kafka_admin.create("replay-styles", partitions=1)
    prefix = unique_name("replay") + ":"
    out = tmp_path / "out.jsonl"
    result = await replay(
        bundle_dir,
        kafka_bootstrap,
        "--topic",
        history.topic,
        "--partition-range",
        "0",
        "--output",
        out,
        "--to-kafka",
        "--topics-topic",
        topics_topic,
        "--styles-topic",
        styles_topic,
        "--to-redis",
        redis_url,
        "--redis-key-prefix",
        prefix,
    )
    assert result.status == 0, result.err
    lines = read_lines(out)
    assert len(lines) == PER_PARTITION
    expected = {line["id"]: ClassificationResult.model_validate(line) for line in lines}

    topic_records = await consume_messages(kafka_bootstrap, topics_topic, PER_PARTITION, timeout=90)
    style_records = await consume_messages(kafka_bootstrap, styles_topic, PER_PARTITION, timeout=90)
    topics = {r.key.decode(): TopicResult.model_validate_json(r.value) for r in topic_records}
    styles = {r.key.decode(): StyleResult.model_validate_json(r.value) for r in style_records}
    assert topics == {i: e.topic for i, e in expected.items()}
    assert styles == {i: e.style for i, e in expected.items()}

    client = aioredis.from_url(redis_url)
    try:
        for article_id, result_obj in expected.items():
            stored = await client.get("%sarticle:%s" % (prefix, article_id))
            assert stored is not None, article_id
            assert ClassificationResult.model_validate_json(stored) == result_obj
    finally:
        await client.aclose()


async def test_unknown_topic_and_partition_exit_2(
    bundle_dir: Path, kafka_bootstrap: str, history: History, tmp_path: Path
) -> None:
    missing = await replay(
        bundle_dir, kafka_bootstrap, "--topic", unique_name("no-such-topic"), "--output", tmp_path / "a.jsonl"
    )
    assert missing.status == 2 and "does not exist" in missing.err
    bad_partition = await replay(
        bundle_dir,
        kafka_bootstrap,
        "--topic",
        history.topic,
        "--output",
        tmp_path / "b.jsonl",
        "--partition-range",
        "7:0-5",
    )
    assert bad_partition.status == 2 and "no partition 7" in bad_partition.err
