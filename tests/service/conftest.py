"""Fixtures of the streaming-service tests: fresh topics per test and settings that point at them.

Kafka and Redis are the real ones of ``tests/fixtures/services.py``; the model is the real
ONNX bundle of the ``tiny_bundle`` fixture (``tests/fixtures/models.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from newsmtl._settings import Settings, load_settings
from newsmtl.consumer import Predictor
from tests.fixtures.kafka_utils import create_topics, unique_name
from tests.service._helpers import Stream


@pytest.fixture(scope="session")
def bundle_dir(tiny_bundle: Path) -> Path:
    """The directory of the trained, exported tiny model."""
    return tiny_bundle


@pytest.fixture(scope="session")
def predictor(bundle_dir: Path) -> Predictor:
    return Predictor.load(bundle_dir)


@pytest.fixture
def make_stream(kafka_bootstrap: str) -> Callable[..., Any]:
    """``await make_stream(partitions=3)``: four fresh topics, a fresh group and Redis prefix."""

    async def make(*, partitions: int = 3) -> Stream:
        stream = Stream(
            input=unique_name("articles"),
            topics=unique_name("topics"),
            styles=unique_name("styles"),
            dlq=unique_name("dlq"),
            group=unique_name("group"),
            redis_prefix=unique_name("results") + ":",
        )
        # The outputs get one partition each in most tests; the input has `partitions`.
        await create_topics(kafka_bootstrap, [stream.input], partitions=partitions)
        await create_topics(kafka_bootstrap, [stream.topics, stream.styles, stream.dlq], partitions=2)
        return stream

    return make


@pytest.fixture
def make_settings(kafka_bootstrap: str, redis_url: str) -> Callable[..., Settings]:
    """Settings for an in-process service on ``stream``; nested ``overrides`` win."""

    def make(stream: Stream, **overrides: dict[str, Any]) -> Settings:
        tree: dict[str, Any] = stream.settings_overrides()
        tree["kafka"]["bootstrap_servers"] = kafka_bootstrap
        tree["redis"]["url"] = redis_url
        tree["http"] = {"port": 0, "host": "127.0.0.1"}
        tree["service"] = {"log_format": "text", "shutdown_grace_s": 30.0}
        for section, values in overrides.items():
            tree.setdefault(section, {}).update(values)
        return load_settings(**tree)

    return make


@pytest.fixture
def serve_args(kafka_bootstrap: str, redis_url: str, bundle_dir: Path) -> Callable[..., list[str]]:
    """The command line of ``newsmtl serve`` on ``stream``, plus ``extra`` flags."""

    def make(stream: Stream, *extra: str, command: str = "serve") -> list[str]:
        return stream.command_line(
            bundle=bundle_dir, bootstrap=kafka_bootstrap, redis_url=redis_url, extra=extra, command=command
        )

    return make


def serve_env(stream: Stream, **extra: str) -> dict[str, str]:
    """Environment of a service subprocess: settings without a flag, and text logs."""
    env = {
        "NEWSMTL_REDIS__KEY_PREFIX": stream.redis_prefix,
        "NEWSMTL_HTTP__HOST": "127.0.0.1",
        "NEWSMTL_SERVICE__LOG_FORMAT": "text",
        "NEWSMTL_SERVICE__SHUTDOWN_GRACE_S": "30",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env
