"""Data preparation and batched inference shared by training, evaluation and the tools.

``prepare_data`` turns a file + a :class:`TrainConfig` into examples, a split and label maps,
deterministically: evaluation calls it again with the run's stored config to recompute exactly
the split the run was trained on. ``encode_examples`` tokenizes once into padded arrays (the
token-id cache of a run: epochs only index into it).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from newsmtl._errors import DataError
from newsmtl.model._config import TrainConfig
from newsmtl.model._data import (
    DataSplit,
    Example,
    load_examples,
    select_publications,
    split_examples,
    split_fingerprint,
    subsample,
)
from newsmtl.text import TextEncoder

__all__ = [
    "EncodedSet",
    "ForwardOutputs",
    "PreparedData",
    "encode_examples",
    "encode_ids",
    "iter_batches",
    "prepare_data",
    "run_forward",
]

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]


@dataclass
class PreparedData:
    examples: list[Example]
    split: DataSplit
    topics: list[str]
    publications: list[str]
    bias: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def prepare_data(path: Path, cfg: TrainConfig, *, labels: dict[str, list[str]] | None = None) -> PreparedData:
    """Load, subsample (``max_articles``), split and derive label maps, all seeded by ``cfg.seed``.

    ``labels`` (a trained run's label maps) skips deriving them: evaluation of a run uses the
    run's topics and modelled publications, whatever the evaluation data holds.
    """
    all_examples = load_examples(path, fields=cfg.fields, label_field=cfg.label_field)
    keep = subsample(len(all_examples), cfg.max_articles, seed=cfg.seed)
    examples = [all_examples[i] for i in keep]
    split = split_examples(examples, seed=cfg.seed, dev_fraction=cfg.dev_fraction, test_fraction=cfg.test_fraction)
    if labels is not None:
        topics, publications, bias = list(labels["topics"]), list(labels["publications"]), list(labels.get("bias", []))
    else:
        if not split.train or not split.dev:
            raise DataError("%s: too few examples for a train/dev split (%d usable)" % (path, len(examples)))
        topics = sorted({ex.topic for ex in examples})
        if len(topics) < 2:
            raise DataError("%s: need at least 2 distinct topic labels, found %s" % (path, topics))
        publications = select_publications(
            examples, split.train, min_articles=cfg.min_publication_articles,
            max_publications=cfg.max_publications, explicit=cfg.publications,
        )
        bias = sorted({ex.bias for ex in examples if ex.bias is not None}) if cfg.bias_head else []
        if len(bias) < 2:
            bias = []
    info = {
        "path": str(Path(path).resolve()),
        "seed": cfg.seed,
        "max_articles": cfg.max_articles,
        "label_field": cfg.label_field,
        "fields": dict(cfg.fields),
        "examples_in_file": len(all_examples),
        "split_sizes": split.sizes(),
        "split_fractions": {"dev": cfg.dev_fraction, "test": cfg.test_fraction},
        "train_fingerprint": split_fingerprint(examples, split.train),
        "dev_fingerprint": split_fingerprint(examples, split.dev),
        "test_fingerprint": split_fingerprint(examples, split.test),
        "publications_in_train": len({examples[i].publication for i in split.train}),
        "modelled_train_articles": sum(1 for i in split.train if examples[i].publication in set(publications)),
        "topic_counts_train": dict(Counter(examples[i].topic for i in split.train).most_common()),
        "publication_counts_train": dict(
            Counter(examples[i].publication for i in split.train if examples[i].publication in set(publications)).most_common()
        ),
        "bias_counts_train": dict(Counter(examples[i].bias for i in split.train if examples[i].bias).most_common()),
    }
    return PreparedData(examples=examples, split=split, topics=topics, publications=publications, bias=bias, info=info)


@dataclass
class EncodedSet:
    """Padded token ids and label indices of one split; -1 = unknown/missing."""

    ids: npt.NDArray[np.int32]  # [N,T]
    lengths: IntArray  # [N]
    topic: IntArray  # [N]
    publication: IntArray  # [N] index into the modelled publications, -1 = other outlet
    bias: IntArray  # [N]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def encode_ids(
    encoder: TextEncoder, examples: Sequence[Example], *, chunk: int = 4096
) -> tuple[npt.NDArray[np.int32], IntArray]:
    """Token ids [N,max_length] (right-padded) and lengths [N] of every example."""
    n, width = len(examples), encoder.max_length
    ids = np.full((n, width), encoder.pad_id, dtype=np.int32)
    lengths = np.zeros(n, dtype=np.int64)
    for start in range(0, n, chunk):
        part = examples[start : start + chunk]
        for row, seq in enumerate(encoder.encode_batch([e.title for e in part], [e.text for e in part]), start=start):
            ids[row, : len(seq)] = seq
            lengths[row] = len(seq)
    return ids, lengths


def encode_examples(
    encoder: TextEncoder, examples: Sequence[Example], *, topics: Sequence[str], publications: Sequence[str],
    bias: Sequence[str], token_ids: tuple[npt.NDArray[np.int32], IntArray] | None = None,
) -> EncodedSet:
    """Tokenize (unless ``token_ids`` come from a cache) and index the labels."""
    topic_index = {t: i for i, t in enumerate(topics)}
    pub_index = {p: i for i, p in enumerate(publications)}
    bias_index = {b: i for i, b in enumerate(bias)}
    ids, lengths = token_ids if token_ids is not None else encode_ids(encoder, examples)
    if len(ids) != len(examples):
        raise ValueError("token ids and examples differ in length")
    return EncodedSet(
        ids=ids,
        lengths=lengths,
        topic=np.array([topic_index.get(e.topic, -1) for e in examples], dtype=np.int64),
        publication=np.array([pub_index.get(e.publication or "", -1) for e in examples], dtype=np.int64),
        bias=np.array([bias_index.get(e.bias or "", -1) for e in examples], dtype=np.int64),
    )


def iter_batches(n: int, batch_size: int, *, rng: np.random.Generator | None = None) -> Iterator[IntArray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def batch_tensors(data: EncodedSet, rows: IntArray, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(int(data.lengths[rows].max()), 1)
    ids = torch.from_numpy(data.ids[rows, :width].astype(np.int64))
    mask = (torch.arange(width).unsqueeze(0) < torch.from_numpy(data.lengths[rows]).unsqueeze(1)).long()
    return {
        "input_ids": ids.to(device, non_blocking=True),
        "attention_mask": mask.to(device, non_blocking=True),
        "publication_index": torch.from_numpy(data.publication[rows]).to(device),
        "topic": torch.from_numpy(data.topic[rows]).to(device),
        "bias": torch.from_numpy(data.bias[rows]).to(device),
    }


@dataclass
class ForwardOutputs:
    topic_logits: npt.NDArray[np.float32]
    shared_topic_logits: npt.NDArray[np.float32]
    style_logits: npt.NDArray[np.float32]
    bias_logits: npt.NDArray[np.float32] | None
    shared_contribution: npt.NDArray[np.float32]
    private_contribution: npt.NDArray[np.float32]


@torch.no_grad()
def run_forward(net: nn.Module, data: EncodedSet, *, batch_size: int, device: torch.device) -> ForwardOutputs:
    """Eval-mode forward over a whole set; restores the module's train/eval mode afterwards."""
    was_training = net.training
    net.eval()
    parts: dict[str, list[npt.NDArray[np.float32]]] = {
        k: [] for k in ("topic_logits", "shared_topic_logits", "style_logits", "bias_logits",
                        "shared_contribution", "private_contribution")
    }
    try:
        for rows in iter_batches(len(data), batch_size):
            b = batch_tensors(data, rows, device)
            out = net(b["input_ids"], b["attention_mask"], b["publication_index"])
            for key in parts:
                value = getattr(out, key)
                if value is not None:
                    parts[key].append(value.float().cpu().numpy())
    finally:
        net.train(was_training)

    def cat(key: str) -> npt.NDArray[np.float32]:
        return np.concatenate(parts[key]) if parts[key] else np.zeros((0, 0), dtype=np.float32)

    return ForwardOutputs(
        topic_logits=cat("topic_logits"),
        shared_topic_logits=cat("shared_topic_logits"),
        style_logits=cat("style_logits"),
        bias_logits=cat("bias_logits") if parts["bias_logits"] else None,
        shared_contribution=cat("shared_contribution"),
        private_contribution=cat("private_contribution"),
    )
