"""Analysis of trained runs and adaptation to new outlets (imports torch, sklearn, matplotlib).

Public API::

    from newsmtl.analysis import analyze_run, adapt_run, adapt_learning_curve
    analyze_run(Path("runs/base"), data_path, Path("reports/base"))   # index.html + analysis.json + PNGs
    adapt_run(Path("runs/base"), Path("new.jsonl"), publication="example.com", out_dir=Path("runs/base+ex"))
    adapt_learning_curve(Path("runs/base"), bbc_path, sizes=(25, 50, 100, 200, 400))
"""

from __future__ import annotations

from newsmtl.analysis._adapt import (
    AdaptConfig,
    AdaptResult,
    NewOutlet,
    adapt_run,
    evaluate_new_outlet,
    grow_network,
    load_label_map,
    load_new_outlet_examples,
    train_new_outlet,
)
from newsmtl.analysis._analyze import ANALYSIS_FORMAT, FIGURE_FILES, AnalysisResult, analyze_run
from newsmtl.analysis._curve import BBC_TOPIC_MAP, adapt_learning_curve, train_scratch
from newsmtl.analysis._html import SECTIONS
from newsmtl.analysis._relatedness import EXPECTED_GROUPS, linear_cka

__all__ = [
    "ANALYSIS_FORMAT",
    "BBC_TOPIC_MAP",
    "EXPECTED_GROUPS",
    "FIGURE_FILES",
    "SECTIONS",
    "AdaptConfig",
    "AdaptResult",
    "AnalysisResult",
    "NewOutlet",
    "adapt_learning_curve",
    "adapt_run",
    "analyze_run",
    "evaluate_new_outlet",
    "grow_network",
    "linear_cka",
    "load_label_map",
    "load_new_outlet_examples",
    "train_new_outlet",
    "train_scratch",
]
