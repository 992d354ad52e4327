"""The one settings object of newsmtl.

Precedence, highest first: explicit keyword arguments (the CLI passes its flags this way),
``NEWSMTL_*`` environment variables, then the defaults below. Nested sections use ``__`` in
environment names, e.g. ``NEWSMTL_KAFKA__BOOTSTRAP_SERVERS`` or ``NEWSMTL_BATCHING__MAX_BATCH_SIZE``.

Secrets are :class:`pydantic.SecretStr`, so neither ``repr`` nor logs show them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from newsmtl._errors import ConfigError

__all__ = [
    "BatchingSettings",
    "HttpSettings",
    "KafkaSettings",
    "ModelSettings",
    "RedisSettings",
    "ServiceSettings",
    "Settings",
    "TopicSettings",
    "load_settings",
]

_SECTION = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(BaseModel):
    """Connection, security and consumer-group settings, passed through to aiokafka."""

    model_config = _SECTION

    bootstrap_servers: str = Field("localhost:9092", description="Comma-separated host:port list.")
    client_id: str = "newsmtl"
    group_id: str = "newsmtl"
    group_instance_id: str | None = Field(
        None, description="Static membership id (e.g. the pod name); a restart then causes no rebalance."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(45_000, ge=1_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    max_poll_records: int = Field(500, ge=1)
    fetch_max_bytes: int = Field(52_428_800, ge=1_024)
    max_partition_fetch_bytes: int = Field(1_048_576 * 4, ge=1_024)
    request_timeout_ms: int = Field(40_000, ge=1_000)
    producer_linger_ms: int = Field(5, ge=0)
    producer_max_batch_bytes: int = Field(1_048_576, ge=1_024)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    transactional_id_prefix: str = Field(
        "newsmtl-tx", description="Exactly-once mode: prefix of the transactional id (plus the member id)."
    )

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError("security_protocol %s needs sasl_mechanism" % self.security_protocol)
        return self


class TopicSettings(BaseModel):
    """Kafka topic names."""

    model_config = _SECTION

    input: str = "news.articles"
    topics: str = "news.topics"
    styles: str = "news.styles"
    dlq: str = "news.articles.dlq"


class RedisSettings(BaseModel):
    """The Redis result cache. Keys are ``<key_prefix>article:<id>``."""

    model_config = _SECTION

    enabled: bool = True
    url: str = Field("redis://localhost:6379/0", description="redis:// or rediss:// URL, without a password.")
    username: str | None = None
    password: SecretStr | None = None
    key_prefix: str = "newsmtl:"
    ttl_seconds: int = Field(7 * 24 * 3600, ge=0, description="0 keeps results forever.")
    socket_timeout_s: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("redis url must start with redis://, rediss:// or unix://")
        if parts.password:
            # A password inside the URL would show up in reprs and logs; SecretStr keeps it out.
            raise ValueError("put the Redis password in NEWSMTL_REDIS__PASSWORD, not in the URL")
        return value


class BatchingSettings(BaseModel):
    """Micro-batching and back-pressure."""

    model_config = _SECTION

    max_batch_size: int = Field(64, ge=1, le=4096)
    max_wait_ms: int = Field(50, ge=0, le=60_000)
    max_in_flight_batches: int = Field(4, ge=1, le=64)
    max_message_bytes: int = Field(1_048_576, ge=1_024, description="Larger messages are dead-lettered.")


class ModelSettings(BaseModel):
    """The model bundle and the ONNX Runtime session."""

    model_config = _SECTION

    bundle_path: Path | None = Field(None, description="Bundle directory; empty means the packaged default.")
    providers: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    intra_op_threads: int = Field(0, ge=0, description="0 lets ONNX Runtime decide.")
    inter_op_threads: int = Field(0, ge=0)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    length_bucket: int = Field(32, ge=1, description="Token-length bucket width for padding-aware batching.")
    cuda_device_id: int = Field(0, ge=0)


class HttpSettings(BaseModel):
    """Health and metrics endpoints."""

    model_config = _SECTION

    host: str = "0.0.0.0"  # noqa: S104 - the probes come from outside the pod
    port: int = Field(8080, ge=0, le=65535)


class ServiceSettings(BaseModel):
    """Runtime behaviour of ``newsmtl serve``."""

    model_config = _SECTION

    exactly_once: bool = False
    shutdown_grace_s: float = Field(30.0, gt=0)
    retry_initial_backoff_s: float = Field(0.2, gt=0)
    retry_max_backoff_s: float = Field(10.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"


class Settings(BaseSettings):
    """All configuration of newsmtl, frozen once built."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSMTL_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        validate_default=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    batching: BatchingSettings = BatchingSettings()
    model: ModelSettings = ModelSettings()
    http: HttpSettings = HttpSettings()
    service: ServiceSettings = ServiceSettings()


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from flags (``overrides``, nested dicts), env and defaults.

    ``None`` values in ``overrides`` mean "flag not given" and do not override env. Validation
    errors become :class:`~newsmtl.ConfigError` with every failing field named.
    """
    from pydantic import ValidationError

    try:
        return Settings(**_drop_none(overrides))
    except ValidationError as exc:
        problems = "; ".join(
            "%s: %s" % (".".join(str(p) for p in err["loc"]) or "settings", err["msg"]) for err in exc.errors()
        )
        raise ConfigError("invalid settings: %s" % problems) from None
