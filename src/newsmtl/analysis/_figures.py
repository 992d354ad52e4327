"""Figures of the analysis report (matplotlib's object API on the Agg canvas: no pyplot state)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import dendrogram

__all__ = [
    "contributions_figure",
    "language_figure",
    "probes_figure",
    "projection_figure",
    "relatedness_figure",
    "to_png",
]

_BIAS_COLOURS = {"left": "#2b6cb0", "center": "#718096", "right": "#c53030"}


def to_png(fig: Figure, *, dpi: int = 110) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def probes_figure(rows: Sequence[tuple[str, float]], chance: float, majority: float, title: str) -> Figure:
    fig = Figure(figsize=(6.4, 0.5 * len(rows) + 1.6))
    ax = fig.add_subplot()
    names = [r[0] for r in rows]
    values = [r[1] for r in rows]
    y = np.arange(len(rows))
    ax.barh(y, values, color="#4a5568")
    for yi, val in zip(y, values, strict=True):
        ax.text(val + 0.01, float(yi), "%.3f" % val, va="center", fontsize=8)
    ax.axvline(chance, color="#c53030", ls="--", lw=1, label="chance 1/P = %.3f" % chance)
    ax.axvline(majority, color="#dd6b20", ls=":", lw=1.5, label="majority class = %.3f" % majority)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("held-out accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    return fig


def contributions_figure(publications: Sequence[str], shared_share: Sequence[float], n: Sequence[int]) -> Figure:
    order = np.argsort(shared_share)
    fig = Figure(figsize=(7.0, 0.28 * len(publications) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(publications))
    s = np.asarray(shared_share)[order]
    ax.barh(y, s, color="#2c7a7b", label="shared")
    ax.barh(y, 1 - s, left=s, color="#d69e2e", label="private (own outlet)")
    ax.set_yticks(y, ["%s (n=%d)" % (publications[i], n[i]) for i in order], fontsize=8)
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="black", lw=0.6, ls=":")
    ax.set_xlabel("mean share of |logit contribution| to the predicted topic")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Where topic decisions come from, per publication", fontsize=10)
    return fig


def relatedness_figure(
    matrix: np.ndarray,
    labels: Sequence[str],
    linkage_matrix: Sequence[Sequence[float]],
    order: Sequence[int],
    bias: Mapping[str, str],
    title: str,
    *,
    hide_diagonal: bool,
) -> Figure:
    n = len(labels)
    size = max(5.0, 0.3 * n + 2.5)
    fig = Figure(figsize=(size + 1.2, size + 1.0))
    grid = fig.add_gridspec(2, 2, width_ratios=(1, 5), height_ratios=(1, 5), wspace=0.02, hspace=0.02)
    ax = fig.add_subplot(grid[1, 1])
    top = fig.add_subplot(grid[0, 1])
    left = fig.add_subplot(grid[1, 0])
    shown = np.array(matrix, dtype=float)[np.ix_(order, order)]
    if hide_diagonal:
        np.fill_diagonal(shown, np.nan)
    image = ax.imshow(shown, cmap="viridis", aspect="auto", interpolation="nearest")
    ticks = np.arange(n)
    names = [labels[i] for i in order]
    ax.set_xticks(ticks, names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.yaxis.tick_right()
    for lab in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        lab.set_color(_BIAS_COLOURS.get(bias.get(lab.get_text(), ""), "black"))
    if n >= 2 and len(linkage_matrix):
        # scipy puts leaf i at 10*i + 5: match the heatmap's cell centres (imshow rows run downwards).
        z = np.asarray(linkage_matrix, dtype=float)
        dendrogram(z, ax=top, no_labels=True, color_threshold=0, above_threshold_color="#4a5568")
        dendrogram(z, ax=left, no_labels=True, orientation="left", color_threshold=0, above_threshold_color="#4a5568")
        top.set_xlim(0, 10 * n)
        left.set_ylim(10 * n, 0)
    for extra in (top, left):
        extra.set_axis_off()
    corner = fig.add_subplot(grid[0, 0])
    corner.set_axis_off()
    cax = corner.inset_axes((0.1, 0.55, 0.8, 0.12))
    colorbar = fig.colorbar(image, cax=cax, orientation="horizontal")
    colorbar.ax.tick_params(labelsize=6, rotation=45)
    top.set_title(title + "\n(labels: blue left, grey center, red right)", fontsize=9)
    return fig


def projection_figure(panels: Sequence[dict[str, Any]], method: str) -> Figure:
    """``panels``: dicts with xy [N,2], colour index [N], legend names, title."""
    fig = Figure(figsize=(12.0, 10.5))
    axes = fig.subplots(2, 2)
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        xy = np.asarray(panel["xy"])
        size = 5.0 if len(xy) > 800 else 14.0
        colour = np.asarray(panel["colour"])
        names: Sequence[str] = panel["names"]
        cmap = _palette(len(names))
        for i, name in enumerate(names):
            sel = colour == i
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=size, alpha=0.7, color=cmap[i], label=name, linewidths=0)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=6, markerscale=2, ncol=2 if len(names) > 12 else 1, loc="best", framealpha=0.6)
    fig.suptitle("2-D %s projections of frozen features" % method, fontsize=11)
    return fig


def language_figure(
    shared: Mapping[str, Sequence[dict[str, Any]]], private: Mapping[str, Sequence[dict[str, Any]]]
) -> Figure:
    """Small multiples: the shared features' tokens per topic (teal), then per outlet (ochre)."""
    topics = [t for t, rows in shared.items() if rows][:8]
    outlets = [p for p, rows in private.items() if rows][:24]
    cols = 4
    shared_rows = int(np.ceil(len(topics) / cols))
    rows = max(1, shared_rows + int(np.ceil(len(outlets) / cols)))
    height = 2.3 * rows + 0.6
    fig = Figure(figsize=(14.0, height))
    grid = fig.add_gridspec(rows, cols, hspace=0.6, wspace=0.75, top=1.0 - 0.55 / height)
    for i, name in enumerate(topics):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        _token_bars(ax, shared[name][:8], "topic %s (shared)" % name, "#2c7a7b")
    for i, name in enumerate(outlets):
        ax = fig.add_subplot(grid[shared_rows + i // cols, i % cols])
        _token_bars(ax, private[name][:8], "%s (private)" % name, "#d69e2e")
    fig.suptitle("Tokens that drive the shared (per topic) and private (per outlet) features: lift", fontsize=11)
    return fig


def _token_bars(ax: Any, rows: Sequence[dict[str, Any]], title: str, colour: str) -> None:
    y = np.arange(len(rows))
    ax.barh(y, [r["score"] for r in rows], color=colour)
    ax.set_yticks(y, [r["token"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=6)
    ax.set_title(title, fontsize=8)


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]
