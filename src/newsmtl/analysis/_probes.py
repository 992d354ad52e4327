"""Linear probes on frozen features: how much publication (and topic) information they carry.

A probe is a fresh multinomial logistic regression (standardised inputs) fitted on features of
the run's *training* articles and scored on its held-out *test* articles. Adversarial training
should leave the shared features with little publication information (probe near chance) while
the private features keep it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from newsmtl._errors import DataError

__all__ = ["fit_probe", "baseline_rates"]

logger = logging.getLogger(__name__)


def baseline_rates(train_y: np.ndarray, test_y: np.ndarray, num_classes: int) -> dict[str, float]:
    """Chance (1/C) and the majority-class rate: the train split's most common class on test."""
    values, counts = np.unique(train_y, return_counts=True)
    majority = int(values[counts.argmax()])
    return {
        "chance": 1.0 / num_classes,
        "majority": float(np.mean(test_y == majority)),
    }


def fit_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    c: float = 1.0,
    max_iter: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a logistic-regression probe and score it on the test features."""
    if len(np.unique(train_y)) < 2:
        raise DataError("a probe needs at least two classes among its training articles")
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, max_iter=max_iter, random_state=seed),
    )
    converged = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(train_x, train_y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        converged = False
        logger.warning("probe on %d-dim features did not fully converge in %d iterations", train_x.shape[1], max_iter)
    predicted = probe.predict(test_x)
    train_acc = float(accuracy_score(train_y, probe.predict(train_x)))
    return {
        "accuracy": float(accuracy_score(test_y, predicted)),
        "macro_f1": float(f1_score(test_y, predicted, average="macro", zero_division=0)),
        "train_accuracy": train_acc,
        "dim": int(train_x.shape[1]),
        "n_train": int(len(train_y)),
        "n_test": int(len(test_y)),
        "converged": converged,
    }
