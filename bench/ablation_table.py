"""The ablation table: one row per evaluated run (or baseline report), as markdown.

Usage::

    python bench/ablation_table.py \\
        "full adversarial shared-private=reports/full.json:runs/full" \\
        "single-task=reports/single-task.json:runs/single-task" \\
        "TF-IDF + LR (lead text)=reports/tfidf-lead.json" ...

Each argument is ``LABEL=REPORT[:RUN_DIR]``: ``REPORT`` is a ``newsmtl evaluate`` report or a
``bench/tfidf_baseline.py`` result (both use the flat keys ``topic.macro_f1``, ``topic.accuracy``,
``style.top1``, ``style.top3`` and ``bias.macro_f1``); ``RUN_DIR``, when given, adds the run's
training wall time and best epoch from its ``metrics.json``. The majority-class row comes from
the first report that carries ``baseline.*`` figures. Every report must be on the same split:
the script refuses reports whose test-set sizes differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

KEYS = ("topic.macro_f1", "topic.accuracy", "style.top1", "style.top3", "bias.macro_f1")


def _cell(value: Any) -> str:
    return "–" if value is None else "%.3f" % float(value)


def _test_size(report: dict[str, Any]) -> int | None:
    for path in (("data", "n"), ("split_sizes", "test")):  # evaluate report, tfidf result
        node: Any = report
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, int):
            return node
    return None


def _parse(spec: str) -> tuple[str, Path, Path | None]:
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise SystemExit("ablation_table: expected LABEL=REPORT[:RUN_DIR], got %r" % spec)
    report, _, run = rest.partition(":")
    return label, Path(report), Path(run) if run else None


def build_table(specs: list[str]) -> str:
    rows: list[str] = []
    sizes: dict[str, int] = {}
    majority: dict[str, Any] | None = None
    for spec in specs:
        label, report_path, run_dir = _parse(spec)
        report = json.loads(report_path.read_text())
        size = _test_size(report)
        if size is not None:
            sizes[label] = size
        if majority is None and report.get("baseline.topic.macro_f1") is not None:
            majority = {k: report.get("baseline." + k) for k in KEYS}
        train = "–"
        if run_dir is not None:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            train = "%.0f s (best epoch %s)" % (metrics["train_seconds"], metrics.get("best_epoch", "?"))
        elif report.get("wall_seconds") is not None:
            train = "%.0f s" % report["wall_seconds"]
        rows.append("| %s | %s | %s |" % (label, " | ".join(_cell(report.get(k)) for k in KEYS), train))
    if len(set(sizes.values())) > 1:
        raise SystemExit("ablation_table: reports are on different test sets: %s" % sizes)
    if majority is not None:
        rows.append("| majority class | %s | – |" % " | ".join(_cell(majority[k]) for k in KEYS))
    head = "| model | topic macro-F1 | topic accuracy | style top-1 | style top-3 | bias macro-F1 | training time |"
    return "\n".join([head, "|---|---|---|---|---|---|---|", *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="LABEL=REPORT[:RUN_DIR]")
    args = parser.parse_args()
    sys.stdout.write(build_table(args.reports) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
