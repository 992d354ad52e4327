"""``newsmtl demo``: classify the packaged sample articles with the packaged model and show a table.

Needs neither Kafka nor Redis (unless ``--kafka``) nor torch: ``pip install 'newsmtl[serve]'``
and ``newsmtl demo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from newsmtl._errors import BundleError, ConfigError, ModelError

__all__ = ["register"]

_LEGEND = (
    "topic: the most probable topic and its probability. shared / private: how much of the topic "
    "decision comes from outlet-agnostic features vs the claimed outlet's own encoder (100% shared "
    "when the outlet is unknown or unmodelled). styles: the modelled outlets the text reads most like."
)


def _load_predictor(bundle: Path | None, providers: str | None) -> Any:
    from newsmtl._settings import load_settings

    settings = load_settings(model={"bundle_path": bundle, "providers": providers}).model
    try:
        from newsmtl.consumer import Predictor
    except ImportError as exc:  # a broken serving install: say what is missing
        raise ModelError(
            "the serving dependencies are incomplete (%s); pip install 'newsmtl[serve]'" % exc
        ) from None
    try:
        return Predictor.load(bundle, settings=settings)
    except BundleError as exc:
        if settings.bundle_path is not None:  # --bundle or NEWSMTL_MODEL__BUNDLE_PATH: its own error
            raise
        raise BundleError(
            "this install of newsmtl has no default model bundle, so the demo has nothing to run (%s). "
            "Pass --bundle DIR with a bundle written by `newsmtl export`, or build the default one with "
            "scripts/build_default_bundle.sh" % exc
        ) from None


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        bundle: Path | None = typer.Option(
            None, "--bundle", help="Model bundle directory (default: the bundle packaged with newsmtl)."
        ),
        samples: Path | None = typer.Option(
            None, "--samples", help="JSON Lines articles to show instead of the packaged samples."
        ),
        kafka: str | None = typer.Option(
            None,
            "--kafka",
            metavar="BOOTSTRAP",
            help="Stream the samples through this broker and an in-process service instead.",
        ),
        limit: int | None = typer.Option(None, "--limit", min=1, help="Show only the first N samples."),
        interval: float = typer.Option(
            0.1, "--interval", min=0.0, help="--kafka: seconds between two articles."
        ),
        timeout: float = typer.Option(
            120.0, "--timeout", min=1.0, help="--kafka: give up after this many seconds."
        ),
        keep_topics: bool = typer.Option(
            False, "--keep-topics", help="--kafka: keep the demo's fresh topics."
        ),
        width: int | None = typer.Option(
            None, "--width", min=60, help="Table width (default: the terminal's)."
        ),
        providers: str | None = typer.Option(None, "--providers", help="auto, cpu, cuda or tensorrt."),
    ) -> None:
        """Classify the sample articles with the packaged model and show topics and publication styles."""
        if bundle is not None and not bundle.is_dir():
            raise ConfigError("--bundle %s is not a directory" % bundle)
        with _quiet_service_logs():
            _run_demo(bundle, samples, kafka, limit, interval, timeout, keep_topics, width, providers)


@contextlib.contextmanager
def _quiet_service_logs() -> Iterator[None]:
    """The model load and the service log at INFO; the table is the demo's output (-v shows them)."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("newsmtl.consumer", "aiokafka")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _run_demo(
    bundle: Path | None,
    samples: Path | None,
    kafka: str | None,
    limit: int | None,
    interval: float,
    timeout: float,
    keep_topics: bool,
    width: int | None,
    providers: str | None,
) -> None:
    from rich.console import Console

    from newsmtl.demo import load_samples, results_table, stream_demo

    console = Console(width=width)
    if width is None and not console.is_terminal:
        # Piped or under CI, rich falls back to 80 columns, which squeezes the table unreadably.
        console = Console(width=160)
    articles = load_samples(samples)
    if limit is not None:
        articles = articles[:limit]
    started = time.perf_counter()
    predictor = _load_predictor(bundle, providers)
    loaded = time.perf_counter() - started
    model = "%s %s" % (predictor.model_name, predictor.model_version)
    if kafka is None:
        started = time.perf_counter()
        results = predictor.predict(articles)
        took = time.perf_counter() - started
        console.print(
            results_table(
                articles,
                results,
                title="newsmtl demo: %d sample articles" % len(articles),
                caption="model %s (loaded in %.2f s); classified in %.2f s on %s"
                % (model, loaded, took, ", ".join(predictor.providers)),
            )
        )
        console.print(_LEGEND, style="dim")
        return
    live = console.is_terminal
    results, latencies = asyncio.run(
        stream_demo(
            articles,
            predictor=predictor,
            bootstrap=kafka,
            console=console,
            interval_s=interval,
            timeout_s=timeout,
            keep_topics=keep_topics,
            live=live,
        )
    )
    if not live:
        console.print(
            results_table(
                articles,
                results,
                title="newsmtl demo via Kafka %s: %d of %d classified" % (kafka, len(results), len(articles)),
                caption="model %s" % model,
                extra=["%.0f ms" % (1000 * s) for s in latencies],
                extra_header="latency",
            )
        )
    ordered = sorted(latencies)
    console.print(
        "%d articles through Kafka and the service; latency median %.0f ms, max %.0f ms"
        % (len(ordered), 1000 * ordered[len(ordered) // 2], 1000 * ordered[-1])
    )
    console.print(_LEGEND, style="dim")
