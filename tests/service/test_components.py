"""The service's parts that need neither a broker nor a model: decoding a batch into articles and
dead letters, client settings, retry classification, logs, metrics, the health server, the CLI."""

from __future__ import annotations

import base64
import json
import logging
import ssl
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.structs import ConsumerRecord
from redis import exceptions as redis_errors

from newsmtl._errors import ConfigError, KafkaSinkError, ModelError, RedisSinkError
from newsmtl._settings import KafkaSettings, load_settings
from newsmtl.cli import main
from newsmtl.cli._serve import _settings as serve_settings
from newsmtl.consumer import (
    HealthServer,
    ServiceMetrics,
    decode_batch,
    is_transient,
    kafka_client_kwargs,
    producer_kwargs,
    redis_key,
    retry_transient,
    transactional_id,
)
from newsmtl.consumer._logging import JsonFormatter, TextFormatter
from tests.service._helpers import http_get, poison_messages


def _record(
    offset: int, value: bytes | None, *, partition: int = 0, key: bytes | None = b"k"
) -> ConsumerRecord:
    return ConsumerRecord(
        topic="articles",
        partition=partition,
        offset=offset,
        timestamp=1_700_000_000_000 + offset,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=(),
    )


def _article(article_id: str) -> bytes:
    return json.dumps({"id": article_id, "title": "T", "text": "Body of " + article_id}).encode()


# ---------------------------------------------------------------------------- batches


def test_decode_batch_separates_articles_from_dead_letters_and_tracks_offsets() -> None:
    records = [
        _record(10, _article("a"), partition=0),
        _record(11, b"{not json", partition=0, key=b"bad-key"),
        _record(12, _article("b"), partition=0),
        _record(5, None, partition=1, key=None),
        _record(6, _article("c"), partition=1),
    ]
    batch = decode_batch(records, max_message_bytes=1_048_576, generation=3)

    assert batch.generation == 3 and batch.size == 5
    assert [a.id for a in batch.articles] == ["a", "b", "c"]
    assert [(s.partition, s.offset) for s in batch.sources] == [(0, 10), (0, 12), (1, 6)]
    assert batch.timestamps_ms == [1_700_000_000_010, 1_700_000_000_012, 1_700_000_000_006]
    # Commit the next offset after the batch's last message, per partition; a dead-lettered
    # message counts as handled.
    assert batch.commit_offsets == {TopicPartition("articles", 0): 13, TopicPartition("articles", 1): 7}
    assert batch.start_offsets == {TopicPartition("articles", 0): 10, TopicPartition("articles", 1): 5}

    bad, tombstone = batch.dead_letters
    assert bad.error_class == "invalid_json" and "JSON" in bad.reason
    assert base64.b64decode(bad.original_base64) == b"{not json"
    assert bad.original_key_base64 is not None and base64.b64decode(bad.original_key_base64) == b"bad-key"
    assert bad.source is not None and (bad.source.partition, bad.source.offset) == (0, 11)
    assert tombstone.error_class == "empty" and tombstone.original_key_base64 is None


def test_every_kind_of_poison_message_becomes_a_dead_letter() -> None:
    poison = poison_messages(16, oversize_bytes=65_537)
    batch = decode_batch(
        [_record(i, value) for i, (_, _, value) in enumerate(poison)], max_message_bytes=65_536
    )
    assert batch.articles == []
    classes = {
        kind: letter.error_class for (kind, _, _), letter in zip(poison, batch.dead_letters, strict=True)
    }
    assert classes == {
        "empty": "empty",
        "tombstone": "empty",
        "oversize_message": "oversize",
        "invalid_utf8": "invalid_utf8",
        "truncated_json": "invalid_json",
        "json_array": "not_an_object",
        "json_string": "not_an_object",
        "missing_id": "missing_field",
        "missing_text": "missing_field",
        "numeric_id": "wrong_type",
        "blank_text": "schema",
        "padded_id": "schema",
        "bad_language": "schema",
        "bad_published_at": "schema",
        "title_too_long": "oversize",
        "deeply_nested": "invalid_json",
    }
    assert all(letter.reason for letter in batch.dead_letters)


def test_split_dead_letters_the_articles_the_model_failed_on_with_their_original_bytes() -> None:
    from newsmtl.schemas import ClassificationResult

    records = [_record(0, _article("a"), key=b"a"), _record(1, _article("b"), key=b"b")]
    batch = decode_batch(records, max_message_bytes=1_048_576)
    result = ClassificationResult.model_validate(
        {
            "id": "a",
            "topic": {
                "id": "a",
                "model_name": "m",
                "model_version": "1",
                "classified_at": "2024-01-01T00:00:00Z",
                "topic": "x",
                "topic_scores": {"x": 1.0},
                "topic_head": "shared",
                "shared_share": 1.0,
            },
            "style": {
                "id": "a",
                "model_name": "m",
                "model_version": "1",
                "classified_at": "2024-01-01T00:00:00Z",
                "styles": {"p": 1.0},
                "top_style": "p",
            },
        }
    )
    results, timestamps, letters = batch.split([result, ModelError("boom")])
    assert results == [result]
    assert timestamps == [1_700_000_000_000]
    (letter,) = letters
    assert letter.error_class == "inference_failed" and "boom" in letter.reason
    assert base64.b64decode(letter.original_base64) == _article("b")
    assert letter.source is not None and letter.source.offset == 1


# ---------------------------------------------------------------------------- Kafka client settings


def test_plaintext_client_kwargs_carry_connection_settings_only() -> None:
    kwargs = kafka_client_kwargs(KafkaSettings(bootstrap_servers="b1:9092,b2:9092", client_id="svc"))
    assert kwargs == {
        "bootstrap_servers": "b1:9092,b2:9092",
        "client_id": "svc",
        "request_timeout_ms": 40_000,
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_client_kwargs_unwrap_the_secret_and_build_a_tls_context() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret",  # type: ignore[arg-type]  # noqa: S106 - a test secret
        ssl_check_hostname=False,
    )
    assert "s3cret" not in repr(kafka)
    kwargs = kafka_client_kwargs(kafka)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc" and kwargs["sasl_plain_password"] == "s3cret"  # noqa: S105
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].check_hostname is False


def test_sasl_without_credentials_or_with_oauthbearer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sasl_username"):
        kafka_client_kwargs(KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN"))
    with pytest.raises(ConfigError, match="OAUTHBEARER"):
        kafka_client_kwargs(KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER"))


def test_producer_kwargs_are_durable_and_optionally_transactional() -> None:
    kwargs = producer_kwargs(KafkaSettings(), transactional_id="tx-1")
    assert kwargs["acks"] == "all" and kwargs["enable_idempotence"] is True
    assert kwargs["transactional_id"] == "tx-1"
    assert "transactional_id" not in producer_kwargs(KafkaSettings())


def test_transactional_id_is_stable_with_a_static_member_and_unique_without() -> None:
    static = KafkaSettings(group_id="g", group_instance_id="pod-3", transactional_id_prefix="tx")
    assert transactional_id(static) == "tx-g-pod-3"
    dynamic = transactional_id(KafkaSettings(group_id="g", transactional_id_prefix="tx"))
    assert dynamic.startswith("tx-g-") and dynamic != "tx-g-"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (kafka_errors.KafkaConnectionError("down"), True),
        (kafka_errors.NotLeaderForPartitionError(), True),
        (kafka_errors.KafkaTimeoutError(), True),
        (kafka_errors.TopicAuthorizationFailedError(), False),
        (kafka_errors.ProducerFenced(), False),
        (redis_errors.ConnectionError("refused"), True),
        (redis_errors.TimeoutError("slow"), True),
        (redis_errors.ResponseError("WRONGTYPE"), False),
        (KafkaSinkError("x"), True),
        (RedisSinkError("x", retriable=False), False),
        (ValueError("bug"), False),
    ],
)
def test_transient_errors_are_told_apart_from_permanent_ones(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


async def test_retry_transient_retries_until_success_and_raises_permanent_errors_at_once() -> None:
    calls: list[int] = []
    seen: list[str] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise redis_errors.ConnectionError("refused")
        return "ok"

    result = await retry_transient(
        flaky,
        what="flaky",
        initial_backoff_s=0.001,
        max_backoff_s=0.002,
        on_error=lambda e: seen.append(type(e).__name__),
    )
    assert result == "ok" and len(calls) == 3 and seen == ["ConnectionError", "ConnectionError"]

    async def broken() -> None:
        calls.append(1)
        raise kafka_errors.TopicAuthorizationFailedError()

    calls.clear()
    with pytest.raises(kafka_errors.TopicAuthorizationFailedError):
        await retry_transient(broken, what="broken", initial_backoff_s=0.001, max_backoff_s=0.002)
    assert len(calls) == 1


def test_redis_key_layout() -> None:
    assert redis_key("newsmtl:", "abc") == "newsmtl:article:abc"


# ---------------------------------------------------------------------------- logs and metrics


def _log_record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "newsmtl.consumer._service", logging.WARNING, __file__, 1, "dead-lettering: %s", ("why",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_logs_carry_the_extra_context() -> None:
    line = JsonFormatter().format(_log_record(partition=2, offset=41, error_class="invalid_json"))
    entry = json.loads(line)
    assert entry["message"] == "dead-lettering: why" and entry["level"] == "WARNING"
    assert (entry["partition"], entry["offset"], entry["error_class"]) == (2, 41, "invalid_json")


def test_text_logs_append_the_extra_context() -> None:
    line = TextFormatter().format(_log_record(partition=2))
    assert line.endswith("dead-lettering: why [partition=2]")


def test_metrics_use_the_contract_names_and_a_private_registry() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()
    first.messages_in.inc(5)
    first.set_model("m", "v1")
    first.set_lag("articles", 0, 7)
    text = first.exposition().decode()
    assert "newsmtl_messages_in_total 5.0" in text
    assert 'newsmtl_model_info{model_name="m",model_version="v1"} 1.0' in text
    assert 'newsmtl_consumer_lag{partition="0",topic="articles"} 7.0' in text
    assert "newsmtl_messages_in_total 0.0" in second.exposition().decode()
    first.forget_partition("articles", 0)
    assert "newsmtl_consumer_lag{" not in first.exposition().decode()


async def test_health_server_answers_liveness_readiness_and_metrics() -> None:
    metrics = ServiceMetrics()
    state = {"ready": False}

    async def readiness() -> tuple[bool, dict[str, Any]]:
        return state["ready"], {"kafka": state["ready"]}

    async with HealthServer(host="127.0.0.1", port=0, metrics=metrics, readiness=readiness) as server:
        assert server.port
        assert (await http_get(server.port, "/healthz"))[0] == 200
        status, body = await http_get(server.port, "/readyz")
        assert status == 503 and json.loads(body) == {"ready": False, "checks": {"kafka": False}}
        state["ready"] = True
        assert (await http_get(server.port, "/readyz"))[0] == 200
        status, text = await http_get(server.port, "/metrics")
        assert status == 200 and "newsmtl_ready" in text


# ---------------------------------------------------------------------------- CLI


def test_flags_override_env_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSMTL_BATCHING__MAX_BATCH_SIZE", "128")
    monkeypatch.setenv("NEWSMTL_BATCHING__MAX_WAIT_MS", "75")
    monkeypatch.setenv("NEWSMTL_SERVICE__EXACTLY_ONCE", "true")
    flags: dict[str, Any] = dict(
        bundle=None,
        bootstrap_servers=None,
        group_id="g1",
        group_instance_id=None,
        input_topic=None,
        topics_topic=None,
        styles_topic=None,
        dlq_topic=None,
        redis_url=None,
        no_redis=False,
        http_port=None,
        exactly_once=None,
        max_batch_size=None,
        max_wait_ms=20,
        providers=None,
        log_format=None,
    )
    settings = serve_settings(**flags)
    assert settings.batching.max_batch_size == 128  # env
    assert settings.batching.max_wait_ms == 20  # flag over env
    assert settings.kafka.group_id == "g1"  # flag over default
    assert settings.service.exactly_once is True  # env, no flag given
    assert settings.redis.enabled is True
    flags.update(exactly_once=False, no_redis=True)
    settings = serve_settings(**flags)
    assert settings.service.exactly_once is False and settings.redis.enabled is False
    assert load_settings().batching.max_batch_size == 128


def test_serve_rejects_bad_flags_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--max-batch-size", "0"]) != 0
    assert "batching.max_batch_size" in capsys.readouterr().err
    assert main(["serve", "--bundle", "/nonexistent/bundle"]) != 0
    assert "not a directory" in capsys.readouterr().err
    assert main(["serve", "--providers", "quantum"]) != 0
    assert "model.providers" in capsys.readouterr().err
