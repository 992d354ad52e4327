"""newsmtl: streaming news classification with a shared-private multitask network.

The top-level package is torch-free. Public API::

    from newsmtl import Settings, NewsmtlError
    from newsmtl.schemas import Article, TopicResult, StyleResult, DeadLetter
"""

from __future__ import annotations

from newsmtl._errors import (
    BundleError,
    ConfigError,
    DataError,
    ExportError,
    InvalidArticleError,
    KafkaSinkError,
    ModelError,
    NewsmtlError,
    ProviderUnavailableError,
    RedisSinkError,
    ServiceError,
    SinkError,
)
from newsmtl._settings import (
    BatchingSettings,
    HttpSettings,
    KafkaSettings,
    ModelSettings,
    RedisSettings,
    Settings,
    TopicSettings,
)
from newsmtl._version import __version__

__all__ = [
    "BatchingSettings",
    "BundleError",
    "ConfigError",
    "DataError",
    "ExportError",
    "HttpSettings",
    "InvalidArticleError",
    "KafkaSettings",
    "KafkaSinkError",
    "ModelError",
    "ModelSettings",
    "NewsmtlError",
    "ProviderUnavailableError",
    "RedisSettings",
    "RedisSinkError",
    "ServiceError",
    "Settings",
    "SinkError",
    "TopicSettings",
    "__version__",
]
