"""Publication x publication relatedness, its clustering, and its agreement with AllSides bias.

Two measures, both computed on the same held-out articles:

* ``style_confusion`` (primary): ``M[p, q]`` = mean style-head probability of outlet ``q`` on the
  articles of outlet ``p``. It is the model's own answer to "how easily is p's writing taken
  for q's?". Symmetrised and normalised to a cosine-like similarity,
  ``S[p, q] = (M[p,q] + M[q,p]) / 2 / sqrt(M[p,p] M[q,q])`` (diagonal 1).
* ``private_cka``: linear CKA (Kornblith et al. 2019) between the private features that outlet
  ``p``'s and outlet ``q``'s private encoders compute *for the same articles*. High CKA means
  the two encoders learned nearly the same function of the text (up to rotation and scale).
  The encoders start from independent random weights, so shared structure is learned, not
  inherited; but CKA also rewards generic features (length, common words) that any encoder
  picks up, so its *contrasts* matter more than its level.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage, optimal_leaf_ordering
from scipy.spatial.distance import squareform
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score

__all__ = [
    "EXPECTED_GROUPS",
    "bias_agreement",
    "cluster_order",
    "linear_cka",
    "private_cka_matrix",
    "style_confusion",
]

# Outlet groups one would expect to look alike (AllSides ratings of their news coverage).
EXPECTED_GROUPS: dict[str, tuple[str, ...]] = {
    "right": (
        "foxnews.com",
        "washingtontimes.com",
        "townhall.com",
        "nationalreview.com",
        "breitbart.com",
        "newsmax.com",
    ),
    "left": ("vox.com", "salon.com", "nytimes.com", "cnn.com"),
    "center_wire": ("reuters.com", "apnews.com", "usatoday.com", "npr.org"),
}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two representations of the same n examples ([n,d1], [n,d2])."""
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    cross = float(np.linalg.norm(y.T @ x) ** 2)
    norm = float(np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    if norm <= 0.0:
        return 0.0  # a constant representation (dead encoder) shares nothing measurable
    return cross / norm


def private_cka_matrix(private: np.ndarray) -> np.ndarray:
    """[N,P,Dp] private features of every encoder on the same articles -> [P,P] linear CKA."""
    p = private.shape[1]
    x = private.astype(np.float64)
    out = np.eye(p)
    for i in range(p):
        for j in range(i + 1, p):
            out[i, j] = out[j, i] = linear_cka(x[:, i, :], x[:, j, :])
    return out


def style_confusion(style_logits: np.ndarray, publication: np.ndarray, members: Sequence[int]) -> dict[str, np.ndarray]:
    """Style-head confusion among ``members`` (outlet indices that have articles).

    Returns ``confusion`` (row-stochastic over *all* outlets, rows = members, columns = members)
    and ``similarity`` (symmetrised, normalised; diagonal 1).
    """
    z = style_logits - style_logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    idx = np.asarray(members)
    m = np.stack([probs[publication == p][:, idx].mean(axis=0) for p in idx])  # [M,M]
    sym = (m + m.T) / 2.0
    diag = np.sqrt(np.clip(np.diag(m), 1e-12, None))
    sim = sym / np.outer(diag, diag)
    np.fill_diagonal(sim, 1.0)
    return {"confusion": m, "similarity": sim}


def cluster_order(similarity: np.ndarray, *, clusters: int = 3, seed: int = 0) -> dict[str, Any]:
    """Leaf order and linkage (average linkage on ``1 - similarity``) plus ``clusters`` flat clusters.

    The similarity is rescaled to [0, 1] off the diagonal first, so measures with different
    ranges (confusion-based vs CKA) give comparable distances. The flat clusters come from
    spectral clustering of the same rescaled similarity: cutting an average-linkage tree into
    a few clusters mostly splits off single outliers (an outlet nobody is confused with), which
    says little about groups.
    """
    n = similarity.shape[0]
    if n < 2:
        return {"order": list(range(n)), "linkage": [], "clusters": [1] * n}
    sim = (similarity + similarity.T) / 2.0
    off = sim[~np.eye(n, dtype=bool)]
    lo, hi = float(off.min()), float(off.max())
    scaled = (sim - lo) / (hi - lo) if hi > lo else np.zeros_like(sim)
    dist = np.clip(1.0 - scaled, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    condensed = squareform(dist, checks=False)
    z = linkage(condensed, method="average")
    if n > 2:
        z = optimal_leaf_ordering(z, condensed)
    if n > clusters:
        affinity = np.clip(scaled, 0.0, None)
        np.fill_diagonal(affinity, 1.0)
        with warnings.catch_warnings():
            # "Graph is not fully connected": outlets with zero similarity to all others are
            # legitimate here; the embedding still assigns them a cluster.
            warnings.simplefilter("ignore", UserWarning)
            flat = SpectralClustering(
                n_clusters=clusters, affinity="precomputed", random_state=seed, assign_labels="cluster_qr"
            ).fit_predict(affinity) + 1
    else:
        flat = fcluster(z, t=n, criterion="maxclust")
    return {
        "order": [int(i) for i in leaves_list(z)],
        "linkage": z.tolist(),
        "clusters": [int(c) for c in flat],
    }


def _within_between(sim: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    n = sim.shape[0]
    iu = np.triu_indices(n, k=1)
    same = groups[iu[0]] == groups[iu[1]]
    vals = sim[iu]
    within = float(vals[same].mean()) if same.any() else float("nan")
    between = float(vals[~same].mean()) if (~same).any() else float("nan")
    return within, between


def bias_agreement(
    similarity: np.ndarray,
    labels: Sequence[str],
    bias: Mapping[str, str],
    clusters: Sequence[int],
    *,
    permutations: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """How well a similarity matrix agrees with outlet bias labels.

    ``gap`` = mean within-bias similarity - mean between-bias similarity (off-diagonal pairs);
    ``p_value`` = share of random relabellings of the outlets (bias counts kept) with a gap at
    least as large; ``adjusted_rand`` compares the flat clusters with the bias labels.
    """
    known = [i for i, name in enumerate(labels) if name in bias]
    result: dict[str, Any] = {"n_outlets": len(known), "outlet_bias": {labels[i]: bias[labels[i]] for i in known}}
    groups = np.asarray([bias[labels[i]] for i in known])
    if len(known) < 3 or len(set(groups.tolist())) < 2:
        result.update(gap=None, within=None, between=None, p_value=None, adjusted_rand=None)
        result["note"] = "fewer than 3 outlets with bias labels, or only one bias class: no agreement score"
        return result
    sim = similarity[np.ix_(known, known)]
    within, between = _within_between(sim, groups)
    gap = within - between
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        w, b = _within_between(sim, rng.permutation(groups))
        hits += int(w - b >= gap - 1e-12)
    result.update(
        within=within,
        between=between,
        gap=gap,
        p_value=(hits + 1) / (permutations + 1),
        permutations=permutations,
        adjusted_rand=float(adjusted_rand_score(groups, [clusters[i] for i in known])),
    )
    return result


def expected_group_check(similarity: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Within- vs between-group similarity for :data:`EXPECTED_GROUPS` (members present only)."""
    member_group = {name: g for g, names in EXPECTED_GROUPS.items() for name in names}
    present = [i for i, name in enumerate(labels) if name in member_group]
    out: dict[str, Any] = {
        "groups": {g: [n for n in names if n in labels] for g, names in EXPECTED_GROUPS.items()},
    }
    groups = np.asarray([member_group[labels[i]] for i in present])
    if len(present) < 3 or len(set(groups.tolist())) < 2:
        out.update(within=None, between=None, gap=None)
        out["note"] = "too few of the expected outlets are modelled"
        return out
    within, between = _within_between(similarity[np.ix_(present, present)], groups)
    per_group: dict[str, float | None] = {}
    for g in EXPECTED_GROUPS:
        idx = [present[k] for k in range(len(present)) if groups[k] == g]
        if len(idx) >= 2:
            block = similarity[np.ix_(idx, idx)]
            per_group[g] = float(block[np.triu_indices(len(idx), k=1)].mean())
        else:
            per_group[g] = None
    out.update(within=within, between=between, gap=within - between, per_group_within=per_group)
    return out
