"""Classification metrics in plain numpy (labels may be strings; no scikit-learn needed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["accuracy", "classification_summary", "confusion", "macro_f1", "per_class_f1", "topk_accuracy"]


def accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    if not y_true:
        return float("nan")
    return sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p) / len(y_true)


def per_class_f1(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[Any, float]:
    """F1 of every label that occurs in ``y_true`` or ``y_pred`` (scikit-learn's convention)."""
    tp: Counter[Any] = Counter()
    pred_count = Counter(y_pred)
    true_count = Counter(y_true)
    for t, p in zip(y_true, y_pred, strict=True):
        if t == p:
            tp[t] += 1
    out: dict[Any, float] = {}
    for label in set(true_count) | set(pred_count):
        denom = true_count[label] + pred_count[label]
        out[label] = 2.0 * tp[label] / denom if denom else 0.0
    return out


def macro_f1(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    if not y_true:
        return float("nan")
    scores = per_class_f1(y_true, y_pred)
    return float(np.mean(list(scores.values())))


def topk_accuracy(scores: npt.NDArray[np.floating[Any]], target: npt.NDArray[np.integer[Any]], k: int) -> float:
    """Share of rows whose target index is among the ``k`` highest scores. scores [N,C], target [N]."""
    if len(target) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == target[:, None]).any(axis=1).mean())


def confusion(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any]) -> list[list[int]]:
    """Rows = true label, columns = predicted label, in ``labels`` order (others are dropped)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return [[int(v) for v in row] for row in matrix]


def classification_summary(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, Any]:
    return {"n": len(y_true), "accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred)}
