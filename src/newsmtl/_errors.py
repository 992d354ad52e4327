"""The one exception tree of newsmtl.

Every error the package raises on purpose derives from :class:`NewsmtlError`. Each class says
whether retrying the same operation can succeed (``retriable``), after aiokafka's errors, so the
runtime can decide between "back off and try again" and "dead-letter / fail loudly"::

    NewsmtlError
    ├── ConfigError                 bad settings or CLI flags
    ├── InvalidArticleError         one input message is unusable (goes to the DLQ)
    ├── DataError                   a training/evaluation dataset is unusable
    ├── ModelError                  model or checkpoint problems
    │   ├── BundleError             a model bundle is missing, corrupt or of an unknown format
    │   └── ProviderUnavailableError an explicitly requested execution provider did not load
    ├── ExportError                 ONNX export or its verification failed
    ├── SinkError                   a downstream write failed (retriable by default)
    │   ├── KafkaSinkError
    │   └── RedisSinkError
    └── ServiceError                the streaming service cannot continue
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "DataError",
    "ExportError",
    "InvalidArticleError",
    "KafkaSinkError",
    "ModelError",
    "NewsmtlError",
    "ProviderUnavailableError",
    "RedisSinkError",
    "ServiceError",
    "SinkError",
]


class NewsmtlError(Exception):
    """Base class of every error newsmtl raises on purpose."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class ConfigError(NewsmtlError):
    """Settings, flags or a config file are invalid."""


class InvalidArticleError(NewsmtlError):
    """One input message cannot be classified.

    ``kind`` is a short machine-readable class (``invalid_utf8``, ``invalid_json``,
    ``schema``, ``oversize``, ...) and the message is the human-readable reason; both go into
    the dead-letter record.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason, retriable=False)
        self.kind = kind
        self.reason = reason


class DataError(NewsmtlError):
    """A dataset file is missing, malformed or does not have the needed fields."""


class ModelError(NewsmtlError):
    """A model, checkpoint or run directory is unusable."""


class BundleError(ModelError):
    """A model bundle is missing files, fails its checksums or has an unknown format version."""


class ProviderUnavailableError(ModelError):
    """An explicitly requested ONNX Runtime execution provider is not available.

    Raised instead of silently falling back to the CPU.
    """


class ExportError(NewsmtlError):
    """ONNX export or its parity verification failed."""


class SinkError(NewsmtlError):
    """Writing results downstream failed. Retriable unless said otherwise."""

    retriable = True


class KafkaSinkError(SinkError):
    """A Kafka produce, flush or transaction failed."""


class RedisSinkError(SinkError):
    """A Redis pipeline failed."""


class ServiceError(NewsmtlError):
    """The streaming service cannot continue."""
