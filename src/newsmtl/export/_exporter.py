"""``newsmtl export``: run directory -> verified, self-contained model bundle.

Steps (any failure raises :class:`~newsmtl.ExportError` and leaves no bundle behind)::

    load_run ──torch.onnx.export──> fp32 graph ──onnx.checker──┐
    data path + seed ──same split as training──> dev articles   │
        parity: ORT vs torch on >= 256 of them, batch 1/7/64, mixed lengths (fp32 gate: 1e-4, 99.9%)
        accuracy: topic accuracy and macro-F1 of ORT on the whole dev split
    variant (fp16 or int8) ──the same checks──> macro-F1 within 0.5 points of fp32, or refuse (--force)
    model.onnx + tokenizer.json + MODEL_CARD.md + manifest.json (sha256 of every file)
        ──written to a staging directory, read back with read_bundle, then renamed into place
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from newsmtl._errors import ConfigError, ExportError
from newsmtl.export._bundle import (
    BUNDLE_FORMAT_VERSION,
    CARD_FILE,
    INPUT_NAMES,
    MODEL_FILE,
    TOKENIZER_FILE,
    Bundle,
    build_inputs,
    read_bundle,
    sha256_file,
    write_manifest,
)
from newsmtl.export._card import render_model_card
from newsmtl.export._onnx import (
    DEFAULT_OPSET,
    Exporter,
    Int8Method,
    export_fp32,
    make_fp16,
    make_int8,
    output_names,
)
from newsmtl.export._verify import (
    FP32_MAX_ABS_DIFF,
    FP32_MIN_ARGMAX_AGREEMENT,
    EncodedSet,
    classification_metrics,
    mixed_lengths,
    parity_report,
    predict_topics_onnx,
)
from newsmtl.model._network import SharedPrivateNet
from newsmtl.text import TextEncoder

__all__ = [
    "MAX_MACRO_F1_DROP",
    "MIN_PARITY_ARTICLES",
    "ExportInputs",
    "ExportOptions",
    "ExportResult",
    "build_bundle",
    "export_run",
]

logger = logging.getLogger(__name__)

MIN_PARITY_ARTICLES = 256
MAX_MACRO_F1_DROP = 0.005  # 0.5 macro-F1 points
DEFAULT_MODEL_NAME = "newsmtl-shared-private"


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """What ``newsmtl export`` was asked for."""

    fp16: bool = False  # ship the fp16 variant as model.onnx (GPU serving)
    quantize: Literal["int8"] | None = None  # ship the int8 variant as model.onnx
    int8_method: Int8Method = "static"
    force: bool = False  # write a variant that misses the macro-F1 bound anyway
    overwrite: bool = False  # replace an existing bundle directory
    data_path: Path | None = None  # overrides the run's recorded data path
    model_name: str | None = None
    model_version: str | None = None
    opset: int = DEFAULT_OPSET
    exporter: Exporter = "torchscript"
    parity_articles: int = MIN_PARITY_ARTICLES
    calibration_articles: int = 256
    max_dev_articles: int | None = None  # None: the whole dev split

    def __post_init__(self) -> None:
        if self.fp16 and self.quantize is not None:
            raise ConfigError(
                "--fp16 and --quantize int8 each choose the variant written as model.onnx; pick one"
            )
        if self.quantize not in (None, "int8"):
            raise ConfigError("--quantize supports only 'int8', got %r" % self.quantize)
        if self.parity_articles < 1 or self.calibration_articles < 1:
            raise ConfigError("parity and calibration article counts must be positive")

    @property
    def variant(self) -> Literal["fp32", "fp16", "int8"]:
        if self.quantize == "int8":
            return "int8"
        return "fp16" if self.fp16 else "fp32"


@dataclass(frozen=True, kw_only=True)
class ExportInputs:
    """Everything a bundle is built from, whichever way it was obtained (a run dir, or a test)."""

    net: SharedPrivateNet
    encoder: TextEncoder
    labels: Mapping[str, Sequence[str]]
    metrics: Mapping[str, Any]
    dev: EncodedSet  # accuracy; the first articles also serve parity
    extra: EncodedSet  # other (non-dev) articles: tops parity up to its minimum, feeds int8 calibration
    source: Mapping[str, Any] = field(default_factory=dict)  # run dir, checkpoint sha256, data path/seed
    data_summary: Mapping[str, Any] = field(default_factory=dict)  # for the model card
    per_publication: Mapping[str, Mapping[str, Any]] | None = None  # from the run's metrics, if it has them


@dataclass(frozen=True)
class ExportResult:
    bundle: Bundle
    manifest: dict[str, Any]
    refused_bound: list[str]  # variants written with --force although they missed the bound


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Verification makes hundreds of tiny calls; spinning worker threads only steal CPU from torch.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _parity_set(inputs: ExportInputs, wanted: int) -> EncodedSet:
    dev = inputs.dev.take(wanted)
    if len(dev) >= wanted:
        return dev
    extra = inputs.extra.take(wanted - len(dev))
    return EncodedSet(
        dev.token_ids + extra.token_ids,
        dev.publication_index + extra.publication_index,
        dev.topic_index + extra.topic_index,
    )


def _calibration_feeds(data: EncodedSet, *, pad_id: int, batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    return [
        build_inputs(
            data.token_ids[i : i + batch_size], data.publication_index[i : i + batch_size], pad_id=pad_id
        )
        for i in range(0, len(data), batch_size)
    ]


def _per_publication(
    dev: EncodedSet, predicted: np.ndarray, publications: Sequence[str]
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[int]] = {}
    for row, pub in enumerate(dev.publication_index):
        if dev.topic_index[row] < 0:
            continue
        groups.setdefault(publications[pub] if pub >= 0 else "(other outlets, shared head)", []).append(row)
    out = {}
    for name, rows in groups.items():
        gold = np.asarray([dev.topic_index[r] for r in rows])
        out[name] = {"articles": len(rows), "accuracy": float(np.mean(gold == predicted[rows]))}
    return out


def _variant_report(
    *,
    file: str | None,
    method: str,
    path: Path,
    parity: dict[str, Any],
    accuracy: dict[str, Any],
    passed: bool,
    notes: list[str],
) -> dict[str, Any]:
    return {
        "file": file,
        "method": method,
        "size_bytes": path.stat().st_size,
        "parity": parity,
        "accuracy": accuracy,
        "passed": passed,
        "notes": notes,
    }


def _default_version(source: Mapping[str, Any]) -> str:
    created = str(source.get("run_created_at") or "")[:10].replace("-", "") or datetime.now(UTC).strftime(
        "%Y%m%d"
    )
    digest = str(source.get("checkpoint_sha256") or "")[:8] or "unversioned"
    return "%s-%s" % (created, digest)


def build_bundle(inputs: ExportInputs, out: Path, options: ExportOptions) -> ExportResult:
    """Export, verify and write the bundle; see the module docstring."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not options.overwrite:
        raise ExportError("%s already exists and is not empty; pass --overwrite to replace it" % out)
    if len(inputs.dev) == 0:
        raise ExportError("the dev split is empty: nothing to verify the export against")
    net, encoder = inputs.net, inputs.encoder
    net.eval()
    pad_id = encoder.pad_id
    if net.cfg.pad_id != pad_id:
        raise ExportError("model pad_id %d differs from the tokenizer's %d" % (net.cfg.pad_id, pad_id))
    labels = {key: list(inputs.labels.get(key, [])) for key in ("topics", "publications", "bias")}
    if len(labels["topics"]) != net.cfg.num_topics or len(labels["publications"]) != net.cfg.num_publications:
        raise ExportError(
            "label lists (%d topics, %d publications) do not match the model (%d, %d)"
            % (
                len(labels["topics"]),
                len(labels["publications"]),
                net.cfg.num_topics,
                net.cfg.num_publications,
            )
        )
    outputs = output_names(net)
    parity_data = mixed_lengths(_parity_set(inputs, options.parity_articles))
    if len(parity_data) < options.parity_articles:
        raise ExportError(
            "only %d articles available for the parity check, need %d"
            % (len(parity_data), options.parity_articles)
        )
    # Parity takes dev articles first; a small dev split (the tiny run's) is topped up from training.
    parity_from_dev = min(len(inputs.dev), options.parity_articles)
    dev = inputs.dev if options.max_dev_articles is None else inputs.dev.take(options.max_dev_articles)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".%s.export-" % out.name, dir=out.parent))
    try:
        variants: dict[str, dict[str, Any]] = {}
        refused: list[str] = []
        # fp32: always made, always gated; it is also the reference for the variants' deltas.
        fp32_path = work / "fp32.onnx"
        export_fp32(net, fp32_path, opset=options.opset, exporter=options.exporter)
        session = _session(fp32_path)
        parity = {
            **parity_report(net, session, parity_data, pad_id=pad_id),
            "from_dev_split": parity_from_dev,
        }
        fp32_pred = predict_topics_onnx(session, dev, pad_id=pad_id)
        fp32_acc = classification_metrics(dev.topic_index, fp32_pred)
        fp32_ok = (
            parity["max_abs_diff_probs"] <= FP32_MAX_ABS_DIFF
            and parity["topic_argmax_agreement"] >= FP32_MIN_ARGMAX_AGREEMENT
        )
        if not fp32_ok:
            raise ExportError(
                "fp32 ONNX does not match torch: max abs diff on probabilities %.3g (bound %.0e), topic argmax "
                "agreement %.4f (bound %.3f) over %d articles; per batch size: %s"
                % (
                    parity["max_abs_diff_probs"],
                    FP32_MAX_ABS_DIFF,
                    parity["topic_argmax_agreement"],
                    FP32_MIN_ARGMAX_AGREEMENT,
                    parity["articles"],
                    {
                        b: (r["max_abs_diff"], r["topic_argmax_agreement"])
                        for b, r in parity["per_batch_size"].items()
                    },
                )
            )
        chosen = options.variant
        variants["fp32"] = _variant_report(
            file=MODEL_FILE if chosen == "fp32" else None,
            method="torch.onnx.export(%s, opset=%d)" % (options.exporter, options.opset),
            path=fp32_path,
            parity=parity,
            accuracy={**fp32_acc, "macro_f1_delta": 0.0, "accuracy_delta": 0.0},
            passed=True,
            notes=[],
        )
        chosen_path = fp32_path
        if chosen != "fp32":
            variant_path = work / ("%s.onnx" % chosen)
            notes: list[str] = []
            if chosen == "fp16":
                make_fp16(fp32_path, variant_path, expected_outputs=outputs)
                method = "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"
                notes.append("fp16 targets GPU serving; ONNX Runtime's CPU provider runs it through casts")
            else:
                calibration = inputs.extra.take(options.calibration_articles)
                if options.int8_method == "static" and len(calibration) == 0:
                    raise ExportError("static int8 quantization needs calibration articles; none available")
                method = make_int8(
                    fp32_path,
                    variant_path,
                    method=options.int8_method,
                    expected_outputs=outputs,
                    calibration=_calibration_feeds(calibration, pad_id=pad_id),
                )
                if options.int8_method == "static":
                    notes.append("calibrated on %d training-split articles" % len(calibration))
            variant_session = _session(variant_path)
            variant_parity = {
                **parity_report(net, variant_session, parity_data, pad_id=pad_id),
                "from_dev_split": parity_from_dev,
            }
            variant_pred = predict_topics_onnx(variant_session, dev, pad_id=pad_id)
            variant_acc = classification_metrics(dev.topic_index, variant_pred)
            f1_delta = variant_acc["macro_f1"] - fp32_acc["macro_f1"]
            variant_acc = {
                **variant_acc,
                "macro_f1_delta": f1_delta,
                "accuracy_delta": variant_acc["accuracy"] - fp32_acc["accuracy"],
                "agreement_with_fp32": float(np.mean(variant_pred == fp32_pred)),
            }
            within = f1_delta >= -MAX_MACRO_F1_DROP
            if not within:
                message = (
                    "%s variant loses %.2f macro-F1 points against fp32 on the dev split (%.4f vs %.4f over %d "
                    "articles; the bound is %.1f points)"
                    % (
                        chosen,
                        -100 * f1_delta,
                        variant_acc["macro_f1"],
                        fp32_acc["macro_f1"],
                        len(dev),
                        100 * MAX_MACRO_F1_DROP,
                    )
                )
                if not options.force:
                    raise ExportError(message + "; refusing to write it (pass --force to write it anyway)")
                logger.warning("%s; writing it anyway (--force)", message)
                notes.append("written with --force: " + message)
                refused.append(chosen)
            variants[chosen] = _variant_report(
                file=MODEL_FILE,
                method=method,
                path=variant_path,
                parity=variant_parity,
                accuracy=variant_acc,
                passed=within,
                notes=notes,
            )
            chosen_path = variant_path

        stage = work / "bundle"
        stage.mkdir()
        shutil.copyfile(chosen_path, stage / MODEL_FILE)
        encoder.save(stage / TOKENIZER_FILE)
        source = dict(inputs.source)
        manifest: dict[str, Any] = {
            "format_version": BUNDLE_FORMAT_VERSION,
            "model_name": options.model_name or DEFAULT_MODEL_NAME,
            "model_version": options.model_version or _default_version(source),
            "created_at": datetime.now(UTC).isoformat(),
            "labels": labels,
            "text_config": encoder.config,
            "max_length": encoder.max_length,
            "pad_id": pad_id,
            "opset": options.opset,
            "inputs": list(INPUT_NAMES),
            "outputs": outputs,
            "variant": chosen,
            "variants": variants,
            "metrics": dict(inputs.metrics),
            "parity": variants[chosen]["parity"],
            "source": source,
            "files": {},
        }
        if inputs.per_publication:
            per_publication, per_pub_source = inputs.per_publication, "from the run's dev metrics"
        else:
            per_publication = _per_publication(dev, fp32_pred, labels["publications"])
            per_pub_source = "fp32 ONNX on the dev split at export"
        (stage / CARD_FILE).write_text(
            render_model_card(
                manifest=manifest,
                per_publication=per_publication,
                per_publication_source=per_pub_source,
                data=inputs.data_summary,
            )
        )
        manifest["files"] = {
            name: sha256_file(stage / name) for name in (MODEL_FILE, TOKENIZER_FILE, CARD_FILE)
        }
        write_manifest(stage, manifest)
        bundle = read_bundle(stage)  # the reader the Predictor uses must accept what we wrote

        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(stage, out)
        logger.info("wrote bundle %s (%s variant)", out, chosen)
        return ExportResult(
            bundle=Bundle(root=out, manifest=bundle.manifest), manifest=manifest, refused_bound=refused
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_run(run_dir: Path, out: Path, options: ExportOptions | None = None) -> ExportResult:
    """Export a run directory written by ``newsmtl train``; see :func:`build_bundle`."""
    from newsmtl.export._run_data import export_inputs_from_run

    options = options or ExportOptions()
    return build_bundle(export_inputs_from_run(Path(run_dir), options), Path(out), options)
