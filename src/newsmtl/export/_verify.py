"""Export verification: ONNX Runtime against torch, and dev-split accuracy of each variant.

Parity runs both on *identical* padded tensors, so any difference is the export's, not the
batching's: every batch size of :data:`PARITY_BATCH_SIZES` is run over the same articles in
their given (unsorted) order, with part of them cut to random lengths, so that each batch of
more than one article mixes lengths and exercises the padding mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from newsmtl.export._bundle import build_inputs
from newsmtl.model._network import OnnxInferenceWrapper, SharedPrivateNet

__all__ = [
    "FP32_MAX_ABS_DIFF",
    "FP32_MIN_ARGMAX_AGREEMENT",
    "PARITY_BATCH_SIZES",
    "EncodedSet",
    "classification_metrics",
    "mixed_lengths",
    "parity_report",
    "predict_topics_onnx",
    "predict_topics_torch",
]

PARITY_BATCH_SIZES = (1, 7, 64)
FP32_MAX_ABS_DIFF = 1e-4
FP32_MIN_ARGMAX_AGREEMENT = 0.999
# Outputs that are probability vectors; the fp32 bound applies to these.
_PROBABILITY_OUTPUTS = ("topic_probs", "style_scores", "bias_probs")


@dataclass(frozen=True)
class EncodedSet:
    """Articles already run through the TextEncoder."""

    token_ids: list[list[int]]
    publication_index: list[int]
    topic_index: list[int]  # gold topic label index, -1 where the label is not in the model's list

    def __len__(self) -> int:
        return len(self.token_ids)

    def take(self, count: int) -> EncodedSet:
        return EncodedSet(self.token_ids[:count], self.publication_index[:count], self.topic_index[:count])


def mixed_lengths(data: EncodedSet, *, seed: int = 0, fraction: float = 0.5) -> EncodedSet:
    """Cut ``fraction`` of the articles to a random length in [1, their length].

    Real articles mostly hit ``max_length``; this guarantees batches with very different lengths.
    """
    rng = np.random.default_rng(seed)
    token_ids = []
    for ids in data.token_ids:
        if ids and rng.random() < fraction:
            ids = ids[: int(rng.integers(1, len(ids) + 1))]
        token_ids.append(list(ids))
    return EncodedSet(token_ids, list(data.publication_index), list(data.topic_index))


def _torch_outputs(wrapper: OnnxInferenceWrapper, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.inference_mode():
        result = wrapper(
            torch.from_numpy(feed["input_ids"]),
            torch.from_numpy(feed["attention_mask"]),
            torch.from_numpy(feed["publication_index"]),
        )
    return [tensor.numpy() for tensor in result]


def _parity_at(
    wrapper: OnnxInferenceWrapper,
    session: Any,
    names: list[str],
    data: EncodedSet,
    batch_size: int,
    pad_id: int,
) -> dict[str, Any]:
    diffs: dict[str, float] = dict.fromkeys(names, 0.0)
    agree = style_agree = 0
    lengths: list[int] = []
    for start in range(0, len(data), batch_size):
        ids = data.token_ids[start : start + batch_size]
        lengths.extend(len(row) for row in ids)
        feed = build_inputs(ids, data.publication_index[start : start + batch_size], pad_id=pad_id)
        expected = _torch_outputs(wrapper, feed)
        actual = session.run(names, feed)
        for name, want, got in zip(names, expected, actual, strict=True):
            got = np.asarray(got, dtype=np.float64)
            if not np.all(np.isfinite(got)):
                diffs[name] = math.inf
                continue
            diffs[name] = max(diffs[name], float(np.max(np.abs(got - want.astype(np.float64)))))
        agree += int(np.sum(np.argmax(actual[0], axis=1) == np.argmax(expected[0], axis=1)))
        style_agree += int(np.sum(np.argmax(actual[1], axis=1) == np.argmax(expected[1], axis=1)))
    return {
        "max_abs_diff": diffs,
        "topic_argmax_agreement": agree / len(data),
        "style_argmax_agreement": style_agree / len(data),
        "min_length": min(lengths),
        "max_length": max(lengths),
    }


def parity_report(
    net: SharedPrivateNet,
    session: Any,
    data: EncodedSet,
    *,
    pad_id: int,
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
) -> dict[str, Any]:
    """Largest absolute differences and argmax agreement of ORT vs torch, per batch size.

    ``session`` is an ``onnxruntime.InferenceSession`` (typed loosely: onnxruntime has no stubs).
    """
    wrapper = OnnxInferenceWrapper(net).eval()
    names = [out.name for out in session.get_outputs()]
    per_batch = {}
    threads = torch.get_num_threads()
    try:
        for batch_size in batch_sizes:
            # Tiny batches are dominated by thread hand-off: one torch thread is ~10x faster there.
            torch.set_num_threads(1 if batch_size <= 8 else threads)
            per_batch[str(batch_size)] = _parity_at(wrapper, session, names, data, batch_size, pad_id)
    finally:
        torch.set_num_threads(threads)
    worst = {name: max(r["max_abs_diff"][name] for r in per_batch.values()) for name in names}
    return {
        "articles": len(data),
        "batch_sizes": list(batch_sizes),
        "max_abs_diff": worst,
        "max_abs_diff_probs": max(worst[name] for name in names if name in _PROBABILITY_OUTPUTS),
        "topic_argmax_agreement": min(r["topic_argmax_agreement"] for r in per_batch.values()),
        "style_argmax_agreement": min(r["style_argmax_agreement"] for r in per_batch.values()),
        "per_batch_size": per_batch,
    }


def _sorted_batches(data: EncodedSet, batch_size: int) -> list[list[int]]:
    # Length-sorted batches: evaluation over a few thousand articles stays quick.
    order = sorted(range(len(data)), key=lambda i: len(data.token_ids[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_topics_onnx(session: Any, data: EncodedSet, *, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Predicted topic index of every article, in input order."""
    predicted = np.empty(len(data), dtype=np.int64)
    for rows in _sorted_batches(data, batch_size):
        feed = build_inputs(
            [data.token_ids[i] for i in rows], [data.publication_index[i] for i in rows], pad_id=pad_id
        )
        (probs,) = session.run(["topic_probs"], feed)
        predicted[rows] = np.argmax(probs, axis=1)
    return predicted


def predict_topics_torch(
    net: SharedPrivateNet, data: EncodedSet, *, pad_id: int, batch_size: int = 64
) -> np.ndarray:
    wrapper = OnnxInferenceWrapper(net).eval()
    predicted = np.empty(len(data), dtype=np.int64)
    for rows in _sorted_batches(data, batch_size):
        feed = build_inputs(
            [data.token_ids[i] for i in rows], [data.publication_index[i] for i in rows], pad_id=pad_id
        )
        predicted[rows] = np.argmax(_torch_outputs(wrapper, feed)[0], axis=1)
    return predicted


def classification_metrics(gold: Sequence[int], predicted: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels that occur in gold or predictions (sklearn's default).

    Articles whose gold label is unknown to the model (-1) are left out.
    """
    gold_arr = np.asarray(gold, dtype=np.int64)
    keep = gold_arr >= 0
    gold_arr, pred_arr = gold_arr[keep], np.asarray(predicted, dtype=np.int64)[keep]
    if gold_arr.size == 0:
        return {"articles": 0, "accuracy": math.nan, "macro_f1": math.nan}
    labels = np.union1d(gold_arr, pred_arr)
    f1s = []
    for label in labels:
        tp = float(np.sum((pred_arr == label) & (gold_arr == label)))
        fp = float(np.sum((pred_arr == label) & (gold_arr != label)))
        fn = float(np.sum((pred_arr != label) & (gold_arr == label)))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {
        "articles": int(gold_arr.size),
        "accuracy": float(np.mean(gold_arr == pred_arr)),
        "macro_f1": float(np.mean(f1s)),
    }
