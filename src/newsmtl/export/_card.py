"""MODEL_CARD.md: a short, factual card written next to the model in every bundle."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["render_model_card"]


def _pct(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return "%.1f%%" % (100 * value)
    return "n/a"


def _figure(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return "%.4g" % value
    return "n/a"


def render_model_card(
    *,
    manifest: Mapping[str, Any],
    per_publication: Mapping[str, Mapping[str, Any]],
    per_publication_source: str,
    data: Mapping[str, Any],
) -> str:
    """Markdown text of the card; every figure comes from the manifest or the run's metrics."""
    labels = manifest["labels"]
    variants = manifest["variants"]
    chosen = manifest["variant"]
    lines = [
        "# Model card: %s %s" % (manifest["model_name"], manifest["model_version"]),
        "",
        "Exported %s from run `%s` (format_version %s, ONNX opset %s, variant **%s** as `model.onnx`)."
        % (
            manifest["created_at"],
            manifest.get("source", {}).get("run_dir", "?"),
            manifest["format_version"],
            manifest["opset"],
            chosen,
        ),
        "",
        "## Model",
        "A shared-private multitask text CNN (after ASP-MTL, Liu, Qiu & Huang 2017): a shared encoder "
        "feeds an outlet-agnostic topic head, one private encoder per modelled publication feeds that "
        "outlet's topic head and a publication-style score. Inputs are the headline and the lead of the "
        "body, cut to %d tokens, with outlet self-names masked." % manifest["max_length"],
        "",
        "- Topics (%d): %s" % (len(labels["topics"]), ", ".join(labels["topics"])),
        "- Modelled publications (%d): %s" % (len(labels["publications"]), ", ".join(labels["publications"])),
        "- Bias labels: %s" % (", ".join(labels["bias"]) if labels["bias"] else "none (no bias head)"),
        "",
        "## Data",
    ]
    if data:
        for key in sorted(data):
            lines.append("- %s: %s" % (key, data[key]))
    else:
        lines.append("- not recorded in the run")
    lines += [
        "",
        "AllSides article-bias corpus (Baly et al., EMNLP 2020): U.S. and UK news 2012-2020, heavily "
        "weighted to U.S. politics. Article texts remain the outlets' copyright.",
        "",
        "## Intended use",
        "Routing and tagging of English-language news articles by coarse topic, and a score of which "
        "modelled outlet's house style an article most resembles. Not for judging the truth, quality or "
        "political stance of an individual article or author.",
        "",
        "## Limits",
        "- Only the first %d tokens of an article are read; later content does not count."
        % manifest["max_length"],
        "- Outlets outside the modelled list (and articles without a publication) use the shared topic "
        "head; their style scores still sum to 1 over the modelled outlets only.",
        "- The corpus ends in 2020 and leans to U.S. politics; expect drift on newer events and other regions.",
        "- Style scores can follow outlet conventions (datelines, bylines) more than content even with "
        "outlet names masked.",
        "",
        "## Verification at export",
        "Accuracy on the dev split; differences against torch on the parity articles (batch sizes 1, 7, 64).",
        "",
        "| variant | file | topic accuracy | topic macro-F1 | macro-F1 delta vs fp32 | max abs diff vs torch | argmax agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, report in variants.items():
        acc = report["accuracy"]
        parity = report["parity"]
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s |"
            % (
                name,
                report.get("file") or "-",
                _pct(acc.get("accuracy")),
                _pct(acc.get("macro_f1")),
                _figure(acc.get("macro_f1_delta")),
                _figure(parity.get("max_abs_diff_probs")),
                _pct(parity.get("topic_argmax_agreement")),
            )
        )
    lines += ["", "## Per-publication topic accuracy (%s)" % per_publication_source]
    if per_publication:
        lines += ["| publication | articles | accuracy |", "|---|---|---|"]
        for name in sorted(per_publication, key=lambda n: (-int(per_publication[n].get("articles", 0)), n)):
            row = per_publication[name]
            lines.append("| %s | %s | %s |" % (name, row.get("articles", "?"), _pct(row.get("accuracy"))))
    else:
        lines.append("Not available.")
    return "\n".join(lines) + "\n"
