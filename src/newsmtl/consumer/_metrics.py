"""Prometheus metrics of one service instance (names fixed by docs/CONTRACTS.md).

Each :class:`ServiceMetrics` has its own :class:`~prometheus_client.CollectorRegistry`, so two
services in one process (tests, the two-consumer group test) never share or clash on counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServiceMetrics"]

# Batch sizes are bounded by BatchingSettings.max_batch_size (<= 4096).
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class ServiceMetrics:
    """The counters, gauges and histograms of ``newsmtl serve``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_in = Counter(
            "newsmtl_messages_in", "Messages consumed from the input topic.", registry=r
        )
        self.messages_out = Counter(
            "newsmtl_messages_out", "Articles classified and published (topics, styles, Redis).", registry=r
        )
        self.dead_lettered = Counter(
            "newsmtl_messages_dead_lettered",
            "Messages sent to the dead-letter topic, by error class.",
            ["error_class"],
            registry=r,
        )
        self.batch_size = Histogram(
            "newsmtl_batch_size", "Messages per micro-batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "newsmtl_inference_seconds", "Model time per micro-batch.", buckets=_INFERENCE_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "newsmtl_end_to_end_seconds",
            "From the input message's Kafka timestamp to its results being acknowledged.",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "newsmtl_consumer_lag",
            "High watermark minus the committed offset, per input partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.errors = Counter("newsmtl_errors", "Errors by kind (retried or fatal).", ["kind"], registry=r)
        self.model_info = Gauge(
            "newsmtl_model_info",
            "The loaded model (value is always 1).",
            ["model_name", "model_version"],
            registry=r,
        )
        self.ready = Gauge("newsmtl_ready", "1 when /readyz answers 200.", registry=r)

    def set_model(self, model_name: str, model_version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model_name=model_name, model_version=model_version).set(1)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))

    def forget_partition(self, topic: str, partition: int) -> None:
        try:
            self.consumer_lag.remove(topic, str(partition))
        except KeyError:
            pass

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
