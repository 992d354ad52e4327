"""Settings precedence, secrets and immutability."""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr, ValidationError

from newsmtl import ConfigError, KafkaSettings, Settings
from newsmtl._settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NEWSMTL_* variable from the outside may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("NEWSMTL_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "localhost:9092"
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.topics.input == "news.articles"
    assert settings.topics.dlq == "news.articles.dlq"
    assert settings.redis.url == "redis://localhost:6379/0"
    assert settings.kafka.sasl_password is None
    assert settings == Settings()


def test_env_overrides_defaults_including_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSMTL_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("NEWSMTL_BATCHING__MAX_BATCH_SIZE", "17")
    monkeypatch.setenv("NEWSMTL_SERVICE__EXACTLY_ONCE", "true")
    monkeypatch.setenv("NEWSMTL_TOPICS__INPUT", "in.topic")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert settings.batching.max_batch_size == 17
    assert settings.service.exactly_once is True
    assert settings.topics.input == "in.topic"
    assert settings.kafka.client_id == KafkaSettings().client_id  # untouched fields keep their defaults


def test_explicit_overrides_beat_env_and_keep_other_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSMTL_KAFKA__BOOTSTRAP_SERVERS", "env-broker:9092")
    monkeypatch.setenv("NEWSMTL_KAFKA__CLIENT_ID", "env-client")
    monkeypatch.setenv("NEWSMTL_BATCHING__MAX_WAIT_MS", "80")
    settings = load_settings(kafka={"client_id": "flag-client"}, batching={"max_batch_size": 8})
    assert settings.kafka.client_id == "flag-client"
    assert settings.kafka.bootstrap_servers == "env-broker:9092"  # partial override keeps the env value
    assert settings.batching.max_batch_size == 8
    assert settings.batching.max_wait_ms == 80


def test_none_means_flag_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSMTL_KAFKA__GROUP_ID", "env-group")
    settings = load_settings(kafka={"group_id": None, "client_id": None}, redis=None)
    assert settings.kafka.group_id == "env-group"
    assert settings.kafka.client_id == KafkaSettings().client_id


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSMTL_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("NEWSMTL_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("NEWSMTL_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("NEWSMTL_KAFKA__SASL_PASSWORD", "kafka-s3cret-value")
    settings = load_settings(redis={"password": "redis-s3cret-value"})

    assert isinstance(settings.kafka.sasl_password, SecretStr)
    assert settings.kafka.sasl_password.get_secret_value() == "kafka-s3cret-value"
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "redis-s3cret-value"
    for rendering in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.model_dump()),
        repr(settings.kafka),
        str(settings.redis),
    ):
        assert "kafka-s3cret-value" not in rendering
        assert "redis-s3cret-value" not in rendering


@pytest.mark.parametrize("url", ["redis://:pw-in-url@cache:6379/0", "rediss://user:pw-in-url@cache:6380/1"])
def test_password_in_redis_url_is_rejected(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as from_flag:
        load_settings(redis={"url": url})
    monkeypatch.setenv("NEWSMTL_REDIS__URL", url)
    with pytest.raises(ConfigError) as from_env:
        load_settings()
    for info in (from_flag, from_env):
        message = str(info.value)
        assert "redis.url" in message
        assert "NEWSMTL_REDIS__PASSWORD" in message
        assert "pw-in-url" not in message
        assert info.value.retriable is False


def test_invalid_values_name_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSMTL_KAFKA__SESSION_TIMEOUT_MS", "not-a-number")
    with pytest.raises(ConfigError) as info:
        load_settings(batching={"max_batch_size": 0}, redis={"url": "http://cache"})
    message = str(info.value)
    for field in ("kafka.session_timeout_ms", "batching.max_batch_size", "redis.url"):
        assert field in message


def test_sasl_without_mechanism_is_rejected() -> None:
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        load_settings(kafka={"security_protocol": "SASL_SSL"})


def test_unknown_nested_env_key_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A typo in a section field must not be silently ignored.
    monkeypatch.setenv("NEWSMTL_KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(ConfigError, match="bootstrap_server"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.kafka = KafkaSettings(bootstrap_servers="other:9092")  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.kafka.bootstrap_servers = "other:9092"  # type: ignore[misc]
    assert settings.kafka.bootstrap_servers == "localhost:9092"
