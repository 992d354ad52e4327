"""Kafka-ceiling worker of bench/pipeline.py: the service's own loop with no model in it.

BENCHMARK BASELINE ONLY. This runs :class:`newsmtl.consumer.NewsService` exactly as
``newsmtl serve`` does (same settings from ``NEWSMTL_*``, same micro-batching, sinks, Redis writes
and commits) but hands it an :class:`IdentityPredictor`, which builds well-formed results of the
bundle's label sets with constant scores and runs no inference. What it measures is the most the
consume -> produce -> commit loop can carry on this machine; it is never used by the service or
by any test.

    NEWSMTL_KAFKA__BOOTSTRAP_SERVERS=... NEWSMTL_MODEL__BUNDLE_PATH=... python bench/_pipeline_identity.py
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from newsmtl._settings import load_settings
from newsmtl.consumer import NewsService, configure_logging
from newsmtl.export._bundle import read_bundle
from newsmtl.schemas import Article, ClassificationResult, Source, StyleResult, TopicResult
from newsmtl.text import normalize_publication


class IdentityPredictor:
    """Builds a result per article from constants: the shape of a real result, no inference."""

    def __init__(self, *, topics: Sequence[str], publications: Sequence[str], model_version: str) -> None:
        self.model_name = "identity-baseline"
        self.model_version = model_version
        self.topic_labels = list(topics)
        self.publication_labels = list(publications)
        self._topic_scores = {label: 1.0 / len(topics) for label in topics}
        self._style_scores = {label: 1.0 / len(publications) for label in publications}
        self._known = set(publications)

    def predict(
        self,
        articles: Sequence[Article],
        sources: Sequence[Source | None] | None = None,
        *,
        classified_at: datetime | None = None,
    ) -> list[ClassificationResult]:
        stamp = classified_at or datetime.now(UTC)
        results = []
        for i, article in enumerate(articles):
            publication = normalize_publication(article.publication)
            common: dict[str, Any] = {
                "id": article.id,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "classified_at": stamp,
                "source": sources[i] if sources is not None else None,
            }
            topic = TopicResult(
                **common,
                topic=self.topic_labels[0],
                topic_scores=self._topic_scores,
                topic_head="publication" if publication in self._known else "shared",
                publication=publication,
                shared_share=0.5,
            )
            style = StyleResult(**common, styles=self._style_scores, top_style=self.publication_labels[0])
            results.append(ClassificationResult(id=article.id, topic=topic, style=style))
        return results


async def _main() -> None:
    settings = load_settings()
    configure_logging(level=settings.service.log_level, fmt=settings.service.log_format)
    if settings.model.bundle_path is None:
        raise SystemExit("set NEWSMTL_MODEL__BUNDLE_PATH: the identity results use the bundle's labels")
    manifest = read_bundle(settings.model.bundle_path).manifest
    predictor = IdentityPredictor(
        topics=manifest.labels.topics,
        publications=manifest.labels.publications,
        model_version=manifest.model_version,
    )
    service = NewsService(settings=settings, predictor=predictor)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    async with service:
        await service.run()


if __name__ == "__main__":
    asyncio.run(_main())
    sys.exit(0)
