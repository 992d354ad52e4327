"""Naive baseline of bench/pipeline.py: the consumer people write first.

BENCHMARK BASELINE ONLY. One message at a time: decode it, classify it alone
(``Predictor.predict([article])`` on the event loop), await the delivery of its topic record,
then of its style record, then the Redis write; offsets are auto-committed in the background.
Same model, same broker, same durability (``acks=all``) as the service; only the batching and
pipelining are missing. Exits after ``--count`` messages.

    python bench/_pipeline_naive.py --bootstrap-servers H:P --redis-url URL --bundle DIR \\
        --input T --topics T --styles T --dlq T --group G --prefix P --count N
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from newsmtl._errors import InvalidArticleError
from newsmtl.consumer import Predictor
from newsmtl.schemas import KafkaSource, decode_article


async def _main(args: argparse.Namespace) -> None:
    predictor = Predictor.load(args.bundle)
    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap_servers,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all", enable_idempotence=True)
    redis = Redis.from_url(args.redis_url)
    await producer.start()
    await consumer.start()
    print("naive consumer started", flush=True)
    done = 0
    try:
        async for message in consumer:
            try:
                article = decode_article(message.value)
            except InvalidArticleError as exc:
                await producer.send_and_wait(args.dlq, value=exc.reason.encode(), key=message.key)
            else:
                source = KafkaSource(topic=message.topic, partition=message.partition, offset=message.offset)
                result = predictor.predict([article], [source])[0]
                key = article.id.encode()
                await producer.send_and_wait(
                    args.topics, value=result.topic.model_dump_json().encode(), key=key
                )
                await producer.send_and_wait(
                    args.styles, value=result.style.model_dump_json().encode(), key=key
                )
                await redis.set(args.prefix + "article:" + article.id, result.model_dump_json(), ex=3600)
            done += 1
            if done >= args.count:
                break
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()
    print("naive consumer done: %d messages" % done, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in (
        "bootstrap-servers",
        "redis-url",
        "bundle",
        "input",
        "topics",
        "styles",
        "dlq",
        "group",
        "prefix",
    ):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--count", type=int, required=True)
    asyncio.run(_main(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
