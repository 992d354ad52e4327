"""Fixtures of the export / Predictor tests that need no trained run.

A randomly initialised SharedPrivateNet and a tokenizer trained here on a few hundred real
articles: enough for the export graph, parity, checksums and the Predictor's plumbing. Tests
about accuracy use the trained ``tiny_run`` / ``tiny_bundle`` fixtures instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.export._helpers import read_articles

PUBLICATIONS = ["foxnews.com", "cnn.com", "nytimes.com", "politico.com"]
BIAS = ["left", "center", "right"]


@pytest.fixture(scope="session")
def raw_articles() -> list[dict[str, Any]]:
    return read_articles(800)


@pytest.fixture(scope="session")
def random_inputs(raw_articles: list[dict[str, Any]]) -> Any:
    import torch

    from newsmtl.export._exporter import ExportInputs
    from newsmtl.export._verify import EncodedSet
    from newsmtl.model._network import ModelConfig, SharedPrivateNet
    from newsmtl.text import TextEncoder, default_text_config, normalize_publication

    train, dev = raw_articles[:400], raw_articles[400:700]
    encoder = TextEncoder.train(
        [a["title"] for a in train],
        [a["text"] for a in train],
        vocab_size=2000,
        config=default_text_config(max_length=96),
    )
    topics = sorted({a["topic_coarse"] for a in raw_articles})
    torch.manual_seed(1234)
    net = SharedPrivateNet(
        ModelConfig(
            vocab_size=encoder.vocab_size,
            num_topics=len(topics),
            num_publications=len(PUBLICATIONS),
            num_bias=len(BIAS),
            pad_id=encoder.pad_id,
            max_length=96,
            embed_dim=32,
            shared_dim=48,
            private_dim=8,
        )
    ).eval()

    def encode(rows: list[dict[str, Any]]) -> EncodedSet:
        pubs = [normalize_publication(a["publication"]) for a in rows]
        return EncodedSet(
            encoder.encode_batch([a["title"] for a in rows], [a["text"] for a in rows]),
            [PUBLICATIONS.index(p) if p in PUBLICATIONS else -1 for p in pubs],
            [topics.index(a["topic_coarse"]) for a in rows],
        )

    return ExportInputs(
        net=net,
        encoder=encoder,
        labels={"topics": topics, "publications": PUBLICATIONS, "bias": BIAS},
        metrics={"dev": {"topic_accuracy": 0.0}},
        dev=encode(dev),
        extra=encode(train),
        source={"run_dir": "<random test net>"},
        data_summary={"articles": len(raw_articles)},
    )


@pytest.fixture(scope="session")
def random_bundle(random_inputs: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from newsmtl.export._exporter import ExportOptions, build_bundle

    out = tmp_path_factory.mktemp("random-bundle") / "bundle"
    build_bundle(random_inputs, out, ExportOptions(model_name="random-test", model_version="0.0.1"))
    return out
