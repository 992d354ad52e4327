"""The torch-free serving side: the Predictor (ONNX Runtime) and the streaming service.

Public API::

    from newsmtl.consumer import Predictor
    predictor = Predictor.load(bundle_dir, settings=ModelSettings())
    results = predictor.predict(articles)
"""

from __future__ import annotations

from newsmtl.consumer._batching import Batch, MicroBatcher, decode_batch, make_dead_letter
from newsmtl.consumer._http import HealthServer
from newsmtl.consumer._kafka import is_transient, kafka_client_kwargs, producer_kwargs
from newsmtl.consumer._logging import configure_logging
from newsmtl.consumer._metrics import ServiceMetrics
from newsmtl.consumer._predictor import Predictor
from newsmtl.consumer._retry import retry_transient
from newsmtl.consumer._service import NewsService, transactional_id
from newsmtl.consumer._sinks import DeadLetterSink, KafkaResultSink, RedisResultSink, redis_key

__all__ = [
    "Batch",
    "DeadLetterSink",
    "HealthServer",
    "KafkaResultSink",
    "MicroBatcher",
    "NewsService",
    "Predictor",
    "RedisResultSink",
    "ServiceMetrics",
    "configure_logging",
    "decode_batch",
    "is_transient",
    "kafka_client_kwargs",
    "make_dead_letter",
    "producer_kwargs",
    "redis_key",
    "retry_transient",
    "transactional_id",
]
