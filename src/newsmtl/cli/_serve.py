"""``newsmtl serve`` (aiokafka service) and ``newsmtl faust-worker`` (the faust-streaming variant).

Flags override ``NEWSMTL_*`` environment variables, which override the defaults; a flag left
out (``None``) leaves the environment in charge. The output topics are expected to exist
(create them with your usual topic tooling; the service never creates topics).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import typer

from newsmtl._errors import ServiceError
from newsmtl._settings import Settings, load_settings

__all__ = ["register"]


def _settings(
    *,
    bundle: Path | None,
    bootstrap_servers: str | None,
    group_id: str | None,
    group_instance_id: str | None,
    input_topic: str | None,
    topics_topic: str | None,
    styles_topic: str | None,
    dlq_topic: str | None,
    redis_url: str | None,
    no_redis: bool,
    http_port: int | None,
    exactly_once: bool | None,
    max_batch_size: int | None,
    max_wait_ms: int | None,
    providers: str | None,
    log_format: str | None,
) -> Settings:
    if bundle is not None and not bundle.is_dir():
        raise typer.BadParameter(f"{bundle} is not a directory", param_hint="--bundle")
    return load_settings(
        kafka={
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "group_instance_id": group_instance_id,
        },
        topics={"input": input_topic, "topics": topics_topic, "styles": styles_topic, "dlq": dlq_topic},
        redis={"url": redis_url, "enabled": False if no_redis else None},
        http={"port": http_port},
        service={"exactly_once": exactly_once, "log_format": log_format},
        batching={"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms},
        model={"bundle_path": bundle, "providers": providers},
    )


async def _serve(settings: Settings) -> None:
    from aiokafka.errors import KafkaError

    from newsmtl.consumer import NewsService

    service = NewsService(settings=settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    try:
        async with service:
            await service.run()
    except KafkaError as exc:
        raise ServiceError(
            f"Kafka at {settings.kafka.bootstrap_servers} failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        bundle: Path | None = typer.Option(
            None, "--bundle", help="Model bundle directory (`newsmtl export`); default: the packaged bundle."
        ),
        bootstrap_servers: str | None = typer.Option(
            None, "--bootstrap-servers", help="Kafka host:port list."
        ),
        group_id: str | None = typer.Option(None, "--group-id", help="Consumer group id."),
        group_instance_id: str | None = typer.Option(
            None,
            "--group-instance-id",
            help="Static group membership id (e.g. the pod name); also makes the exactly-once "
            "transactional id stable across restarts.",
        ),
        input_topic: str | None = typer.Option(None, "--input-topic", help="Topic of input articles."),
        topics_topic: str | None = typer.Option(None, "--topics-topic", help="Output topic of TopicResult."),
        styles_topic: str | None = typer.Option(None, "--styles-topic", help="Output topic of StyleResult."),
        dlq_topic: str | None = typer.Option(None, "--dlq-topic", help="Dead-letter topic."),
        redis_url: str | None = typer.Option(None, "--redis-url", help="redis:// URL (password via env)."),
        no_redis: bool = typer.Option(False, "--no-redis", help="Do not write results to Redis."),
        http_port: int | None = typer.Option(
            None, "--http-port", help="Port of /healthz, /readyz, /metrics."
        ),
        exactly_once: bool | None = typer.Option(
            None,
            "--exactly-once/--at-least-once",
            help="Kafka transactions: results, dead letters and offsets commit atomically.",
        ),
        max_batch_size: int | None = typer.Option(
            None, "--max-batch-size", help="Close a batch at this size."
        ),
        max_wait_ms: int | None = typer.Option(
            None, "--max-wait-ms", help="...or this long after its first message."
        ),
        providers: str | None = typer.Option(
            None, "--providers", help="ONNX Runtime: auto, cpu, cuda, tensorrt."
        ),
        log_format: str | None = typer.Option(None, "--log-format", help="json or text."),
    ) -> None:
        """Classify the input topic continuously: results to Kafka and Redis, bad input to the DLQ.

        The input, topics, styles and DLQ topics must exist; the service never creates topics.

        SIGTERM/SIGINT: finish and commit in-flight batches, exit 0 (a second one skips the wait).
        """
        from newsmtl.consumer import configure_logging

        settings = _settings(
            bundle=bundle,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            group_instance_id=group_instance_id,
            input_topic=input_topic,
            topics_topic=topics_topic,
            styles_topic=styles_topic,
            dlq_topic=dlq_topic,
            redis_url=redis_url,
            no_redis=no_redis,
            http_port=http_port,
            exactly_once=exactly_once,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            providers=providers,
            log_format=log_format,
        )
        # `newsmtl -v serve` keeps DEBUG; otherwise service.log_level decides.
        verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        configure_logging(
            level="DEBUG" if verbose else settings.service.log_level, fmt=settings.service.log_format
        )
        asyncio.run(_serve(settings))

    @app.command("faust-worker")
    def faust_worker(
        bundle: Path | None = typer.Option(None, "--bundle", help="Model bundle directory."),
        bootstrap_servers: str | None = typer.Option(
            None, "--bootstrap-servers", help="Kafka host:port list."
        ),
        group_id: str | None = typer.Option(
            None, "--group-id", help="Faust application id (also its consumer group)."
        ),
        input_topic: str | None = typer.Option(None, "--input-topic", help="Topic of input articles."),
        topics_topic: str | None = typer.Option(None, "--topics-topic", help="Output topic of TopicResult."),
        styles_topic: str | None = typer.Option(None, "--styles-topic", help="Output topic of StyleResult."),
        dlq_topic: str | None = typer.Option(None, "--dlq-topic", help="Dead-letter topic."),
        redis_url: str | None = typer.Option(None, "--redis-url", help="redis:// URL (password via env)."),
        no_redis: bool = typer.Option(False, "--no-redis", help="Do not write results to Redis."),
        http_port: int | None = typer.Option(None, "--http-port", help="Port of faust's web server."),
        max_batch_size: int | None = typer.Option(
            None, "--max-batch-size", help="Close a batch at this size."
        ),
        max_wait_ms: int | None = typer.Option(None, "--max-wait-ms", help="...or after this long."),
        providers: str | None = typer.Option(
            None, "--providers", help="ONNX Runtime: auto, cpu, cuda, tensorrt."
        ),
    ) -> None:
        """The same classifier as a faust-streaming agent (needs the `faust` extra).

        Simpler to extend with faust tables and windows, but offsets are acknowledged by faust
        after each batch is handled and committed on its own timer, not after the sinks confirm.
        """
        settings = _settings(
            bundle=bundle,
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            group_instance_id=None,
            input_topic=input_topic,
            topics_topic=topics_topic,
            styles_topic=styles_topic,
            dlq_topic=dlq_topic,
            redis_url=redis_url,
            no_redis=no_redis,
            http_port=http_port,
            exactly_once=None,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            providers=providers,
            log_format=None,
        )
        from newsmtl.consumer._faust import run_faust_worker

        run_faust_worker(settings)
