"""The real broker through aiokafka: topics, produce/consume, groups, transactions."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from tests.fixtures.kafka_utils import (
    consume_messages,
    consume_until,
    create_topics,
    produce_messages,
    topic_partitions,
    unique_name,
)
from tests.fixtures.services import TopicAdmin

pytestmark = pytest.mark.integration


async def test_produce_and_consume_through_the_broker(kafka_bootstrap: str, kafka_admin: TopicAdmin) -> None:
    topic = await kafka_admin.create("roundtrip", partitions=3)
    sent = [(("key-%d" % (i % 7)).encode(), ("value-%d" % i).encode()) for i in range(60)]

    metadata = await produce_messages(kafka_bootstrap, topic, sent)
    records = await consume_messages(kafka_bootstrap, topic, len(sent))

    assert sorted((r.key, r.value) for r in records) == sorted(sent)
    assert {m.topic for m in metadata} == {topic}
    # The default partitioner sends every key to one partition, which keeps per-key order.
    partition_of_key: dict[bytes | None, set[int]] = {}
    for record in records:
        partition_of_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(partitions) == 1 for partitions in partition_of_key.values())
    for key in partition_of_key:
        values = [r.value for r in sorted(records, key=lambda r: r.offset) if r.key == key]
        assert values == [v for k, v in sent if k == key]


async def test_admin_creates_topics_with_the_requested_partitions(kafka_bootstrap: str, fresh_name) -> None:
    names = {fresh_name("one"): 1, fresh_name("four"): 4}
    for name, partitions in names.items():
        await create_topics(kafka_bootstrap, [name], partitions=partitions)

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        listed = set(await admin.list_topics())
    finally:
        await admin.close()
    assert set(names) <= listed
    for name, partitions in names.items():
        described = await topic_partitions(kafka_bootstrap, name)
        assert [p["partition"] for p in described] == list(range(partitions))
        assert all(p["leader"] >= 0 and p["isr"] for p in described)


async def test_recreating_a_topic_with_another_layout_is_an_error(kafka_admin: TopicAdmin) -> None:
    topic = await kafka_admin.create("layout", partitions=2)
    # Same layout again: harmless.
    await create_topics(kafka_admin.bootstrap, [topic], partitions=2)
    with pytest.raises(RuntimeError, match=topic):
        await create_topics(kafka_admin.bootstrap, [topic], partitions=5)


async def test_consumer_group_commits_what_it_read(kafka_bootstrap: str, kafka_admin: TopicAdmin) -> None:
    topic = await kafka_admin.create("group", partitions=3)
    group = unique_name("group")
    await produce_messages(kafka_bootstrap, topic, [(b"k%d" % i, b"v%d" % i) for i in range(30)])

    records = await consume_messages(kafka_bootstrap, topic, 30, group_id=group)
    assert len(records) == 30

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        end_offsets = await consumer.end_offsets(partitions)
        committed = {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    assert committed == end_offsets
    assert sum(end_offsets.values()) == 30


async def test_read_committed_skips_aborted_transactions(
    kafka_bootstrap: str, kafka_admin: TopicAdmin
) -> None:
    # exactly-once mode of the service relies on broker transactions.
    topic = await kafka_admin.create("tx", partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("tx"))
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()

    records = await consume_until(
        kafka_bootstrap,
        topic,
        lambda got: any(r.value == b"committed-2" for r in got),
        isolation_level="read_committed",
        what="the second committed message",
    )
    assert [r.value for r in records] == [b"committed-1", b"committed-2"]

    uncommitted = await consume_until(
        kafka_bootstrap, topic, lambda got: any(r.value == b"committed-2" for r in got), what="all messages"
    )
    assert [r.value for r in uncommitted] == [b"committed-1", b"aborted", b"committed-2"]


async def test_consume_times_out_with_a_clear_error(kafka_bootstrap: str, kafka_admin: TopicAdmin) -> None:
    topic = await kafka_admin.create("empty", partitions=1)
    await produce_messages(kafka_bootstrap, topic, [b"only-one"])
    with pytest.raises(TimeoutError, match="got 1 records"):
        await consume_messages(kafka_bootstrap, topic, 2, timeout=3)
