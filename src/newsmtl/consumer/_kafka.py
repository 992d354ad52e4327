"""Kafka client plumbing shared by the service, the sinks and the replay CLI.

One place turns :class:`~newsmtl._settings.KafkaSettings` into aiokafka keyword arguments, so
security settings (SASL, TLS) are applied identically to every consumer, producer and admin
client, and secrets are unwrapped only here, at the call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from newsmtl._errors import ConfigError, SinkError
from newsmtl._settings import KafkaSettings

__all__ = ["is_transient", "kafka_client_kwargs", "producer_kwargs"]


def kafka_client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security keyword arguments common to every aiokafka client."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "request_timeout_ms": settings.request_timeout_ms,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in {"SSL", "SASL_SSL"}:
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
            password=settings.ssl_password.get_secret_value() if settings.ssl_password else None,
        )
        context.check_hostname = settings.ssl_check_hostname
        kwargs["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        if settings.sasl_mechanism == "OAUTHBEARER":
            # aiokafka needs a token-provider object for OAUTHBEARER, which flat settings cannot express.
            raise ConfigError(
                "sasl_mechanism OAUTHBEARER is not supported by newsmtl's settings; use SCRAM or PLAIN"
            )
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism != "GSSAPI":
            if settings.sasl_username is None or settings.sasl_password is None:
                raise ConfigError(
                    f"sasl_mechanism {settings.sasl_mechanism} needs kafka.sasl_username and kafka.sasl_password"
                )
            kwargs["sasl_plain_username"] = settings.sasl_username
            kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def producer_kwargs(settings: KafkaSettings, *, transactional_id: str | None = None) -> dict[str, Any]:
    """Keyword arguments of a durable producer: idempotent, ``acks=all``, optionally transactional."""
    kwargs = kafka_client_kwargs(settings)
    kwargs.update(
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.producer_linger_ms,
        max_batch_size=settings.producer_max_batch_bytes,
        compression_type=settings.compression_type,
    )
    if transactional_id is not None:
        kwargs["transactional_id"] = transactional_id
    return kwargs


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same operation later can succeed.

    aiokafka marks most network and leadership errors ``retriable``; its ``KafkaTimeoutError``
    (metadata or delivery timed out) is not marked but is transient for a long-running service.
    Redis connection and timeout errors are transient; other Redis errors are not.
    """
    from aiokafka import errors as kafka_errors
    from redis import exceptions as redis_errors

    if isinstance(exc, SinkError):
        return exc.retriable
    if isinstance(exc, kafka_errors.KafkaTimeoutError | asyncio.TimeoutError | TimeoutError):
        return True
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(exc.retriable)
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return True
    return isinstance(exc, ConnectionError)
