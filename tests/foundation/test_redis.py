"""Results round-trip through the real Redis as JSON."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from newsmtl.schemas import ClassificationResult, KafkaSource, StyleResult, TopicResult
from tests.fixtures.kafka_utils import unique_name

pytestmark = pytest.mark.integration


def _topic_result(article_id: str) -> TopicResult:
    return TopicResult(
        id=article_id,
        model_name="newsmtl-test",
        model_version="0.0.1",
        classified_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        source=KafkaSource(topic="news.articles", partition=2, offset=41),
        topic="politics",
        topic_scores={"politics": 0.7, "sports": 0.2, "tech": 0.1},
        topic_head="publication",
        publication="foxnews.com",
        shared_share=0.625,
        bias="right",
        bias_scores={"left": 0.1, "center": 0.2, "right": 0.7},
    )


async def test_topic_result_round_trips_through_redis(redis_client: aioredis.Redis) -> None:
    result = _topic_result("article-ü-1")
    key = "%s:article:%s" % (unique_name("newsmtl-test"), result.id)

    assert await redis_client.set(key, result.model_dump_json(), ex=60)
    raw = await redis_client.get(key)

    assert raw is not None
    assert TopicResult.model_validate_json(raw) == result
    assert 0 < await redis_client.ttl(key) <= 60
    await redis_client.delete(key)


async def test_classification_result_round_trips_in_a_pipeline(redis_client: aioredis.Redis) -> None:
    prefix = unique_name("newsmtl-test")
    results = []
    for i in range(5):
        topic = _topic_result("a%d" % i)
        style = StyleResult(
            id=topic.id,
            model_name=topic.model_name,
            model_version=topic.model_version,
            classified_at=topic.classified_at,
            styles={"foxnews.com": 0.5, "cnn.com": 0.5},
            top_style="foxnews.com",
        )
        results.append(ClassificationResult(id=topic.id, topic=topic, style=style))

    async with redis_client.pipeline(transaction=True) as pipe:
        for result in results:
            pipe.set("%s:article:%s" % (prefix, result.id), result.model_dump_json())
        assert all(await pipe.execute())

    keys = ["%s:article:%s" % (prefix, r.id) for r in results]
    stored = await redis_client.mget(keys)
    assert [ClassificationResult.model_validate_json(v) for v in stored] == results
    assert await redis_client.delete(*keys) == len(keys)
