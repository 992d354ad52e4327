"""`newsmtl export` on the trained tiny run, through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from newsmtl import ModelSettings
from newsmtl.cli import main
from newsmtl.consumer import Predictor
from newsmtl.export import OUTPUT_NAMES, read_bundle, sha256_file
from newsmtl.schemas import Article

MANIFEST_KEYS = {
    "format_version",
    "model_name",
    "model_version",
    "created_at",
    "labels",
    "text_config",
    "max_length",
    "pad_id",
    "opset",
    "inputs",
    "outputs",
    "variant",
    "variants",
    "metrics",
    "parity",
    "source",
    "files",
}


def _manifest(bundle: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((bundle / "manifest.json").read_text())


def test_tiny_bundle_is_complete_and_verified(tiny_bundle: Path, tiny_run: Path) -> None:
    model = onnx.load(str(tiny_bundle / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    manifest = _manifest(tiny_bundle)
    assert MANIFEST_KEYS <= set(manifest)
    assert manifest["variant"] == "fp32" and manifest["opset"] >= 17
    run_config = json.loads((tiny_run / "config.json").read_text())
    assert manifest["labels"] == {
        k: run_config["labels"].get(k, []) for k in ("topics", "publications", "bias")
    }
    assert manifest["text_config"] == run_config["text_config"]
    assert manifest["max_length"] == run_config["text_config"]["max_length"]
    assert manifest["outputs"] == [o.name for o in model.graph.output]
    assert manifest["outputs"] == list(OUTPUT_NAMES)  # the tiny run trains a bias head
    assert manifest["metrics"]["dev"] == json.loads((tiny_run / "metrics.json").read_text())["dev"]
    assert manifest["source"]["checkpoint_sha256"] == sha256_file(tiny_run / "checkpoint.pt")
    assert manifest["model_version"].endswith(manifest["source"]["checkpoint_sha256"][:8])
    parity = manifest["parity"]
    assert parity["articles"] >= 256 and parity["batch_sizes"] == [1, 7, 64]
    assert parity["max_abs_diff_probs"] <= 1e-4 and parity["topic_argmax_agreement"] >= 0.999
    dev_size = manifest["source"]["split_sizes"]["dev"]
    assert manifest["variants"]["fp32"]["accuracy"]["articles"] == dev_size
    # The recomputed dev split is the run's: ORT fp32 reproduces the run's own dev accuracy.
    run_dev = manifest["metrics"]["dev"]
    assert manifest["variants"]["fp32"]["accuracy"]["accuracy"] == pytest.approx(
        run_dev["topic.accuracy"], abs=1e-9
    )
    assert manifest["variants"]["fp32"]["accuracy"]["macro_f1"] == pytest.approx(
        run_dev["topic.macro_f1"], abs=1e-9
    )
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "MODEL_CARD.md"}
    read_bundle(tiny_bundle)
    card = (tiny_bundle / "MODEL_CARD.md").read_text()
    assert "## Intended use" in card and "## Limits" in card and "## Data" in card
    for outlet in manifest["labels"]["publications"]:
        assert "| %s |" % outlet in card


def test_predictor_on_tiny_bundle_matches_the_torch_run(
    tiny_bundle: Path, tiny_run: Path, allsides_path: Path
) -> None:
    import torch
    from tests.export._helpers import iter_articles

    from newsmtl.model import OnnxInferenceWrapper, load_run

    rows = []
    for row in iter_articles(allsides_path):
        rows.append(row)
        if len(rows) == 48:
            break
    articles = [
        Article(id=r["id"], title=r["title"], text=r["text"], publication=r["publication"]) for r in rows
    ]
    predictor = Predictor.load(tiny_bundle, settings=ModelSettings(providers="cpu"))
    results = predictor.predict(articles)
    run = load_run(tiny_run)
    token_ids = run.encoder.encode_batch([a.title for a in articles], [a.text for a in articles])
    ids, mask = run.encoder.pad(token_ids)
    pubs = torch.tensor([predictor.publication_index(a.publication) for a in articles])
    with torch.inference_mode():
        topic_probs, style_scores, *_ = OnnxInferenceWrapper(run.net)(
            torch.from_numpy(ids), torch.from_numpy(mask), pubs
        )
    for row, result in enumerate(results):
        got = np.array([result.topic.topic_scores[t] for t in predictor.topic_labels])
        np.testing.assert_allclose(got, topic_probs[row].numpy(), atol=1e-5)
        got_style = np.array([result.style.styles[p] for p in predictor.publication_labels])
        np.testing.assert_allclose(got_style, style_scores[row].numpy(), atol=1e-5)
    assert any(r.topic.topic_head == "publication" for r in results)
    assert any(r.topic.topic_head == "shared" for r in results)


@pytest.mark.slow
def test_int8_export_records_its_delta(tiny_run: Path, allsides_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    status = main(
        ["export", str(tiny_run), "--out", str(out), "--quantize", "int8", "--data", str(allsides_path)]
    )
    assert status == 0
    manifest = _manifest(out)
    assert manifest["variant"] == "int8"
    int8, fp32 = manifest["variants"]["int8"], manifest["variants"]["fp32"]
    assert int8["file"] == "model.onnx" and fp32["file"] is None
    assert "quantize_static" in int8["method"]
    acc = int8["accuracy"]
    assert acc["articles"] == fp32["accuracy"]["articles"] == manifest["source"]["split_sizes"]["dev"]
    assert acc["macro_f1_delta"] == pytest.approx(acc["macro_f1"] - fp32["accuracy"]["macro_f1"])
    assert acc["macro_f1_delta"] >= -0.005 and int8["passed"] is True
    assert manifest["parity"] == int8["parity"] and int8["parity"]["articles"] >= 256
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    predictor = Predictor.load(out, settings=ModelSettings(providers="cpu"))
    assert predictor.manifest.variant == "int8"


@pytest.mark.slow
def test_fp16_export(tiny_run: Path, allsides_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp16"
    assert (
        main(["export", str(tiny_run), "--out", str(out), "--fp16", "--force", "--data", str(allsides_path)])
        == 0
    )
    manifest = _manifest(out)
    assert manifest["variant"] == "fp16"
    assert set(manifest["variants"]) == {"fp32", "fp16"}
    assert "macro_f1_delta" in manifest["variants"]["fp16"]["accuracy"]
    model = onnx.load(str(out / "model.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    # inputs/outputs keep their types: callers never see half floats
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quantize", "int4"], "supports only 'int8'"),
        (["--fp16", "--quantize", "int8"], "pick one"),
        (["--int8-method", "magic"], "--int8-method"),
        (["--opset", "13"], "at least 17"),
        (["--exporter", "jit"], "--exporter"),
    ],
)
def test_bad_flags_fail_clearly(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status = main(["export", str(tiny_run), "--out", str(tmp_path / "b"), *args])
    assert status != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_bad_paths_fail_clearly(
    tiny_run: Path, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "b")]) == 2
    assert "run directory" in capsys.readouterr().err
    assert (
        main(["export", str(tiny_run), "--out", str(tmp_path / "b"), "--data", str(tmp_path / "none.jsonl")])
        == 2
    )
    assert "--data" in capsys.readouterr().err
    not_a_run = tmp_path / "empty-run"
    not_a_run.mkdir()
    assert main(["export", str(not_a_run), "--out", str(tmp_path / "b")]) == 2
    assert "cannot load run" in capsys.readouterr().err
    # An existing bundle is never replaced silently.
    existing = tmp_path / "existing"
    shutil.copytree(tiny_bundle, existing)
    assert main(["export", str(tiny_run), "--out", str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    read_bundle(existing)


def test_other_data_does_not_pass_as_the_dev_split(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.export._helpers import read_articles

    other = tmp_path / "other.jsonl"
    with other.open("w") as fh:
        for row in read_articles(3000, skip=3000):
            fh.write(json.dumps(row) + "\n")
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "b"), "--data", str(other)]) == 2
    assert "does not reproduce the training split" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
