"""Export mechanics on a random network: graph contract, parity gate, variants, refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from newsmtl import ConfigError, ExportError
from newsmtl.export import OUTPUT_NAMES, read_bundle
from newsmtl.export._exporter import ExportOptions, build_bundle
from newsmtl.export._onnx import export_fp32, make_int8
from newsmtl.export._verify import EncodedSet, classification_metrics, mixed_lengths
from newsmtl.model._network import ModelConfig, OnnxInferenceWrapper, SharedPrivateNet


def _net(**overrides: Any) -> SharedPrivateNet:
    torch.manual_seed(7)
    cfg = dict(
        vocab_size=300,
        num_topics=4,
        num_publications=3,
        num_bias=0,
        embed_dim=16,
        shared_dim=24,
        private_dim=4,
    )
    cfg.update(overrides)
    return SharedPrivateNet(ModelConfig(**cfg)).eval()  # type: ignore[arg-type]


def _run_both(net: SharedPrivateNet, path: Path, ids: np.ndarray, mask: np.ndarray, pub: np.ndarray) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask, "publication_index": pub})
    with torch.inference_mode():
        want = OnnxInferenceWrapper(net)(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(pub))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-5)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("bias", [0, 3])
def test_graph_has_the_bundle_contract(tmp_path: Path, exporter: str, bias: int) -> None:
    net = _net(num_bias=bias)
    path = tmp_path / "m.onnx"
    export_fp32(net, path, exporter=exporter)  # type: ignore[arg-type]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "publication_index"]
    expected = [n for n in OUTPUT_NAMES if bias or n != "bias_probs"]
    assert [o.name for o in model.graph.output] == expected
    assert max(i.version for i in model.opset_import if i.domain in ("", "ai.onnx")) >= 17
    for value in model.graph.input:
        assert all(d.dim_param and not d.HasField("dim_value") for d in value.type.tensor_type.shape.dim)
    # Dynamic batch and sequence: shapes never seen while tracing, unknown and known outlets.
    rng = np.random.default_rng(0)
    for batch, length in [(1, 1), (5, 33), (2, 300)]:
        ids = rng.integers(1, 300, (batch, length)).astype(np.int64)
        mask = np.ones((batch, length), dtype=np.int64)
        mask[0, length // 2 + 1 :] = 0
        pub = rng.integers(-1, 3, (batch,)).astype(np.int64)
        _run_both(net, path, ids, mask, pub)


def test_fully_shared_ablation_exports(tmp_path: Path) -> None:
    net = _net(use_private=False)
    export_fp32(net, tmp_path / "m.onnx")
    ids = np.arange(1, 41, dtype=np.int64).reshape(4, 10)
    _run_both(net, tmp_path / "m.onnx", ids, np.ones_like(ids), np.array([0, -1, 2, 1], dtype=np.int64))


def test_opset_below_17_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset 16"):
        export_fp32(_net(), tmp_path / "m.onnx", opset=16)


def test_fresh_bundle_records_parity_and_accuracy(random_bundle: Path, random_inputs: Any) -> None:
    manifest = json.loads((random_bundle / "manifest.json").read_text())
    assert manifest["variant"] == "fp32"
    assert set(manifest["variants"]) == {"fp32"}
    fp32 = manifest["variants"]["fp32"]
    assert fp32["file"] == "model.onnx" and fp32["passed"] is True
    parity = manifest["parity"]
    assert parity == fp32["parity"]
    assert parity["articles"] >= 256
    assert parity["batch_sizes"] == [1, 7, 64]
    assert set(parity["per_batch_size"]) == {"1", "7", "64"}
    assert 0 <= parity["max_abs_diff_probs"] <= 1e-4
    assert parity["topic_argmax_agreement"] >= 0.999
    assert set(parity["max_abs_diff"]) == set(OUTPUT_NAMES)
    # mixed lengths really were exercised
    per64 = parity["per_batch_size"]["64"]
    assert per64["min_length"] < per64["max_length"] // 2
    accuracy = fp32["accuracy"]
    assert accuracy["articles"] == len(random_inputs.dev)
    assert 0 <= accuracy["accuracy"] <= 1 and 0 <= accuracy["macro_f1"] <= 1
    for key in (
        "format_version",
        "model_name",
        "model_version",
        "created_at",
        "labels",
        "text_config",
        "max_length",
        "opset",
        "metrics",
        "parity",
        "files",
    ):
        assert key in manifest
    assert manifest["labels"]["publications"] == list(random_inputs.labels["publications"])
    assert manifest["opset"] >= 17
    card = (random_bundle / "MODEL_CARD.md").read_text()
    assert "Per-publication topic accuracy" in card and "foxnews.com" in card


def test_int8_and_fp16_variants_record_their_deltas(random_inputs: Any, tmp_path: Path) -> None:
    for variant, options in {
        "int8": ExportOptions(quantize="int8", force=True),
        "fp16": ExportOptions(fp16=True, force=True),
    }.items():
        out = tmp_path / variant
        result = build_bundle(random_inputs, out, options)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["variant"] == variant
        assert manifest["variants"]["fp32"]["file"] is None  # only the chosen variant ships
        report = manifest["variants"][variant]
        assert report["file"] == "model.onnx"
        acc = report["accuracy"]
        fp32_acc = manifest["variants"]["fp32"]["accuracy"]
        assert acc["macro_f1_delta"] == pytest.approx(acc["macro_f1"] - fp32_acc["macro_f1"])
        assert acc["accuracy_delta"] == pytest.approx(acc["accuracy"] - fp32_acc["accuracy"])
        assert 0 <= acc["agreement_with_fp32"] <= 1
        assert report["parity"]["articles"] >= 256
        assert report["passed"] == (acc["macro_f1_delta"] >= -0.005)
        assert result.refused_bound == ([] if report["passed"] else [variant])
        assert report["size_bytes"] < manifest["variants"]["fp32"]["size_bytes"]
        onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
        read_bundle(out)


def test_variant_below_the_bound_is_refused_without_force(
    random_inputs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import newsmtl.export._exporter as exporter

    # Demand that int8 *gain* 100 points: every real variant then misses the bound.
    monkeypatch.setattr(exporter, "MAX_MACRO_F1_DROP", -1.0)
    out = tmp_path / "refused"
    with pytest.raises(ExportError, match=r"int8 variant loses .* refusing to write it \(pass --force"):
        build_bundle(random_inputs, out, ExportOptions(quantize="int8"))
    assert not out.exists()
    assert not list(tmp_path.glob(".refused*"))  # no staging leftovers
    result = build_bundle(random_inputs, out, ExportOptions(quantize="int8", force=True))
    assert result.refused_bound == ["int8"]
    report = json.loads((out / "manifest.json").read_text())["variants"]["int8"]
    assert report["passed"] is False and any("--force" in note for note in report["notes"])


def test_parity_failure_aborts_with_the_figures(
    random_inputs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import newsmtl.export._exporter as exporter

    monkeypatch.setattr(exporter, "FP32_MAX_ABS_DIFF", -1.0)
    out = tmp_path / "bad"
    with pytest.raises(
        ExportError,
        match=r"fp32 ONNX does not match torch: max abs diff on probabilities .* over 256 articles",
    ):
        build_bundle(random_inputs, out, ExportOptions())
    assert not out.exists()


def test_existing_output_needs_overwrite(random_inputs: Any, tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="--overwrite"):
        build_bundle(random_inputs, out, ExportOptions())
    assert (out / "keep.txt").exists()


def test_option_conflicts() -> None:
    with pytest.raises(ConfigError, match="pick one"):
        ExportOptions(fp16=True, quantize="int8")
    with pytest.raises(ConfigError, match="only 'int8'"):
        ExportOptions(quantize="int4")  # type: ignore[arg-type]


def test_dynamic_int8_uses_conv_integer(tmp_path: Path) -> None:
    net = _net()
    export_fp32(net, tmp_path / "m.onnx")
    make_int8(
        tmp_path / "m.onnx",
        tmp_path / "q.onnx",
        method="dynamic",
        expected_outputs=[n for n in OUTPUT_NAMES if n != "bias_probs"],
    )
    ops = {node.op_type for node in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert "ConvInteger" in ops and "Conv" not in ops


def test_metrics_and_mixed_lengths() -> None:
    metrics = classification_metrics([0, 1, 1, 2, -1], np.array([0, 1, 2, 2, 0]))
    assert metrics["articles"] == 4 and metrics["accuracy"] == 0.75
    # per-class F1: 0 -> 1, 1 -> 2/3, 2 -> 2/3
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    data = EncodedSet([[1] * 50 for _ in range(200)], [0] * 200, [0] * 200)
    cut = mixed_lengths(data, seed=1)
    lengths = [len(ids) for ids in cut.token_ids]
    assert min(lengths) >= 1 and max(lengths) == 50 and len(set(lengths)) > 10
