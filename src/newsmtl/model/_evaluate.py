"""Evaluation of a run on a recomputed split, with a JSON report and its markdown twin.

Report keys: flat dotted headline figures at the top level (``topic.macro_f1``,
``topic.accuracy``, ``style.top1``, ``style.top3``, ``bias.macro_f1`` and the same under
``baseline.`` for the majority-class baseline), plus nested detail sections ``topic``,
``style``, ``bias`` and ``baseline``. A figure is ``null`` when the run did not train that task
(e.g. style for the single-task ablation) or the data has no such labels.

Topic predictions come from the article's outlet head for modelled outlets and from the shared
head for every other outlet ("unknown outlets"); ``topic.shared_head`` scores the shared head on
every article, as if no outlet were known.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from newsmtl._errors import DataError
from newsmtl.model._metrics import (
    accuracy,
    classification_summary,
    confusion,
    macro_f1,
    per_class_f1,
    topk_accuracy,
)
from newsmtl.model._pipeline import EncodedSet, ForwardOutputs, encode_examples, prepare_data, run_forward
from newsmtl.model._run import METRICS_JSON, atomic_write_json, load_run, now_iso

__all__ = ["dev_metrics", "evaluate_run", "report_markdown", "write_report"]

logger = logging.getLogger(__name__)
UNKNOWN = "(other outlets)"


def _style_scores(outputs: ForwardOutputs, data: EncodedSet) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    rows = data.publication >= 0
    return outputs.style_logits[rows], data.publication[rows]


def dev_metrics(
    outputs: ForwardOutputs, data: EncodedSet, *, publications: Sequence[str | None], modelled: Sequence[str],
    trains_style: bool, has_bias: bool,
) -> dict[str, Any]:
    """The headline figures (flat keys) used for early stopping and stored as ``metrics.dev``."""
    del publications, modelled  # the encoded publication index already says who is modelled
    y = data.topic
    pred = outputs.topic_logits.argmax(axis=1)
    out: dict[str, Any] = {
        "topic.macro_f1": macro_f1(list(y), list(pred)),
        "topic.accuracy": accuracy(list(y), list(pred)),
        "style.top1": None,
        "style.top3": None,
        "bias.macro_f1": None,
        "n": len(data),
    }
    if trains_style:
        scores, target = _style_scores(outputs, data)
        if len(target):
            out["style.top1"] = topk_accuracy(scores, target, 1)
            out["style.top3"] = topk_accuracy(scores, target, 3)
    if has_bias and outputs.bias_logits is not None:
        rows = data.bias >= 0
        if rows.any():
            out["bias.macro_f1"] = macro_f1(list(data.bias[rows]), list(outputs.bias_logits[rows].argmax(axis=1)))
    return out


def _names(indices: npt.NDArray[np.int64], labels: Sequence[str]) -> list[str]:
    return [labels[i] if i >= 0 else "?" for i in indices]


def evaluate_run(
    run_dir: Path, data_path: Path, *, split: str = "test", fields: dict[str, str] | None = None,
    batch_size: int = 128, threads: int = 0,
) -> dict[str, Any]:
    """Evaluate ``run_dir`` on ``split`` of ``data_path`` and return the report dict.

    The split is recomputed from the data and the run's stored seed/config; for ``train``/``dev``
    /``test`` the recomputed training split must match the run's fingerprint (else the articles
    could have been trained on) -- use ``split="all"`` for a different dataset.
    """
    run = load_run(run_dir)
    cfg = run.config
    if fields:
        cfg = cfg.replace(fields={**cfg.fields, **fields})
    if threads > 0:
        torch.set_num_threads(threads)
    data = prepare_data(data_path, cfg, labels=run.labels)
    split_check = "not checked (split=all)"
    if split != "all":
        if data.info["train_fingerprint"] != run.data.get("train_fingerprint"):
            raise DataError(
                "%s does not reproduce the training split of %s (different data, fields or max_articles); "
                "evaluate other data with --split all" % (data_path, run_dir)
            )
        split_check = "ok: training split reproduced"
    indices = data.split.get(split)
    if not indices:
        raise DataError("split %r of %s is empty" % (split, data_path))
    examples = [data.examples[i] for i in indices]
    topics, pubs, bias_labels = run.labels["topics"], run.labels["publications"], run.labels.get("bias", [])
    encoded = encode_examples(run.encoder, examples, topics=topics, publications=pubs, bias=bias_labels)
    outputs = run_forward(run.net, encoded, batch_size=batch_size, device=torch.device("cpu"))

    y_true = [e.topic for e in examples]
    y_pred = _names(outputs.topic_logits.argmax(axis=1), topics)
    y_shared = _names(outputs.shared_topic_logits.argmax(axis=1), topics)
    known = encoded.publication >= 0
    outlet = [e.publication if k else UNKNOWN for e, k in zip(examples, known, strict=True)]

    # -- topic ---------------------------------------------------------------------------
    per_pub: dict[str, Any] = {}
    for name in [*pubs, UNKNOWN]:
        rows = [i for i, o in enumerate(outlet) if o == name]
        if rows:
            per_pub[name] = classification_summary([y_true[i] for i in rows], [y_pred[i] for i in rows])
    unknown_rows = [i for i, o in enumerate(outlet) if o == UNKNOWN]
    topic_section: dict[str, Any] = {
        "overall": classification_summary(y_true, y_pred),
        "modelled_outlets": classification_summary(
            [y_true[i] for i in np.flatnonzero(known)], [y_pred[i] for i in np.flatnonzero(known)]
        ),
        "unknown_outlets": classification_summary(
            [y_true[i] for i in unknown_rows], [y_pred[i] for i in unknown_rows]
        ),
        "shared_head": classification_summary(y_true, y_shared),
        "per_class_f1": {k: round(v, 4) for k, v in sorted(per_class_f1(y_true, y_pred).items())},
        "per_publication": per_pub,
        "confusion": {"labels": list(topics), "matrix": confusion(y_true, y_pred, topics)},
    }

    # -- style ---------------------------------------------------------------------------
    trains_style = cfg.trains_style
    style_section: dict[str, Any] = {"trained": trains_style, "n": int(known.sum())}
    top1 = top3 = None
    if trains_style and known.any():
        scores, target = _style_scores(outputs, encoded)
        top1, top3 = topk_accuracy(scores, target, 1), topk_accuracy(scores, target, 3)
        s_true, s_pred = _names(target, pubs), _names(scores.argmax(axis=1), pubs)
        style_section.update(
            {
                "top1": top1,
                "top3": top3,
                "macro_f1": macro_f1(s_true, s_pred),
                "per_publication_recall": {
                    p: accuracy([t for t in s_true if t == p], [q for t, q in zip(s_true, s_pred, strict=True) if t == p])
                    for p in pubs if p in s_true
                },
                "confusion": {"labels": list(pubs), "matrix": confusion(s_true, s_pred, pubs)},
            }
        )

    # -- bias ----------------------------------------------------------------------------
    bias_section: dict[str, Any] = {"trained": bool(bias_labels)}
    bias_f1 = None
    if bias_labels and outputs.bias_logits is not None:
        rows = [i for i, e in enumerate(examples) if e.bias is not None]
        if rows:
            b_true = [examples[i].bias or "" for i in rows]
            b_pred = _names(outputs.bias_logits[rows].argmax(axis=1), bias_labels)
            bias_f1 = macro_f1(b_true, b_pred)
            bias_section.update(
                {**classification_summary(b_true, b_pred),
                 "confusion": {"labels": list(bias_labels), "matrix": confusion(b_true, b_pred, bias_labels)}}
            )

    # -- majority-class baselines (from the training split) ------------------------------
    baseline = _majority_baselines(run.data, examples, known)

    report: dict[str, Any] = {
        "topic.macro_f1": topic_section["overall"]["macro_f1"],
        "topic.accuracy": topic_section["overall"]["accuracy"],
        "style.top1": top1,
        "style.top3": top3,
        "bias.macro_f1": bias_f1,
        "baseline.topic.macro_f1": baseline["topic"].get("macro_f1"),
        "baseline.topic.accuracy": baseline["topic"].get("accuracy"),
        "baseline.style.top1": baseline["style"].get("top1"),
        "baseline.style.top3": baseline["style"].get("top3"),
        "baseline.bias.macro_f1": baseline["bias"].get("macro_f1"),
        "run": {
            "run_dir": str(run_dir),
            "preset": cfg.preset,
            "created_at": run.created_at,
            **_timing(run_dir),
            "dev": run.metrics.get("dev", {}),
        },
        "data": {"path": str(Path(data_path).resolve()), "split": split, "n": len(examples), "seed": cfg.seed,
                 "split_check": split_check, "label_field": cfg.label_field},
        "topic": topic_section,
        "style": style_section,
        "bias": bias_section,
        "baseline": baseline,
        "evaluated_at": now_iso(),
    }
    cleaned: dict[str, Any] = _finite(report)
    return cleaned


def _majority_baselines(run_data: dict[str, Any], examples: Sequence[Any], known: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """Always predict the run's most frequent training label (top-3 most frequent for style)."""
    out: dict[str, Any] = {"topic": {}, "style": {}, "bias": {}}
    topic_counts: dict[str, int] = run_data.get("topic_counts_train", {})
    if topic_counts:
        major = max(topic_counts, key=lambda k: topic_counts[k])
        y_true = [e.topic for e in examples]
        out["topic"] = {"label": major, **classification_summary(y_true, [major] * len(y_true))}
    pub_counts: dict[str, int] = run_data.get("publication_counts_train", {})
    s_true = [e.publication for e, k in zip(examples, known, strict=True) if k]
    if pub_counts and s_true:
        ranked = sorted(pub_counts, key=lambda k: (-pub_counts[k], k))
        out["style"] = {
            "labels": ranked[:3],
            "top1": accuracy(s_true, [ranked[0]] * len(s_true)),
            "top3": sum(1 for s in s_true if s in ranked[:3]) / len(s_true),
        }
    bias_counts: dict[str, int] = run_data.get("bias_counts_train", {})
    b_true = [e.bias for e in examples if e.bias is not None]
    if bias_counts and b_true:
        major = max(bias_counts, key=lambda k: bias_counts[k])
        out["bias"] = {"label": major, **classification_summary(b_true, [major] * len(b_true))}
    return out


def _timing(run_dir: Path) -> dict[str, float | None]:
    import json

    try:
        metrics = json.loads((Path(run_dir) / METRICS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = {}
    keys = ("train_seconds", "total_seconds", "cpu_seconds")
    return {k: float(metrics[k]) if isinstance(metrics.get(k), int | float) else None for k in keys}


def _finite(value: Any) -> Any:
    """NaN (empty groups) -> None, numpy scalars -> Python, so the JSON is strict."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_report(report: dict[str, Any], out: Path, *, run_dir: Path | None = None) -> tuple[Path, Path]:
    """Write REPORT.json and its markdown twin REPORT.md; also store the figures in the run's
    metrics.json under the split name."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)
    md = out.with_suffix(".md")
    md.write_text(report_markdown(report), encoding="utf-8")
    if run_dir is not None:
        metrics_path = Path(run_dir) / METRICS_JSON
        import json

        try:
            existing = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
        except ValueError:
            existing = {}
        existing[report["data"]["split"]] = {
            k: v for k, v in report.items() if "." in k
        }
        atomic_write_json(metrics_path, existing)
    return out, md


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "%.4f" % value
    return str(value)


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Evaluation report",
        "",
        "Run `%s` (preset `%s`) on `%s`, split **%s** (%d articles, seed %s; %s)."
        % (report["run"]["run_dir"], report["run"]["preset"], report["data"]["path"], report["data"]["split"],
           report["data"]["n"], report["data"]["seed"], report["data"]["split_check"]),
        "",
        "| metric | model | majority baseline |",
        "|---|---|---|",
    ]
    for key in ("topic.macro_f1", "topic.accuracy", "style.top1", "style.top3", "bias.macro_f1"):
        lines.append("| %s | %s | %s |" % (key, _fmt(report[key]), _fmt(report.get("baseline." + key))))
    topic = report["topic"]
    lines += ["", "## Topic", "", "| group | n | accuracy | macro-F1 |", "|---|---|---|---|"]
    for name in ("overall", "modelled_outlets", "unknown_outlets", "shared_head"):
        g = topic[name]
        lines.append("| %s | %d | %s | %s |" % (name.replace("_", " "), g["n"], _fmt(g["accuracy"]), _fmt(g["macro_f1"])))
    lines += ["", "### Per publication", "", "| publication | n | accuracy | macro-F1 | style recall |", "|---|---|---|---|---|"]
    recall = report["style"].get("per_publication_recall", {})
    for name, g in topic["per_publication"].items():
        lines.append("| %s | %d | %s | %s | %s |" % (name, g["n"], _fmt(g["accuracy"]), _fmt(g["macro_f1"]), _fmt(recall.get(name))))
    lines += ["", "### Per-class F1", "", "| topic | F1 |", "|---|---|"]
    lines += ["| %s | %s |" % (k, _fmt(v)) for k, v in topic["per_class_f1"].items()]
    lines += ["", "### Topic confusion matrix (rows: true, columns: predicted)", ""]
    lines += _matrix_md(topic["confusion"])
    if report["style"].get("confusion"):
        lines += ["", "## Style confusion matrix (rows: true outlet, columns: top-scored outlet)", ""]
        lines += _matrix_md(report["style"]["confusion"])
    if report["bias"].get("confusion"):
        lines += ["", "## Bias confusion matrix", ""]
        lines += _matrix_md(report["bias"]["confusion"])
    lines.append("")
    return "\n".join(lines)


def _matrix_md(conf: dict[str, Any]) -> list[str]:
    labels = conf["labels"]
    short = [str(i) for i in range(len(labels))]
    out = ["| # | true \\ pred | " + " | ".join(short) + " |", "|---|---|" + "---|" * len(labels)]
    for i, (label, row) in enumerate(zip(labels, conf["matrix"], strict=True)):
        out.append("| %d | %s | %s |" % (i, label, " | ".join(str(v) for v in row)))
    return out

