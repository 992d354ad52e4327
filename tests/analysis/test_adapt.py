"""``newsmtl adapt`` on the tiny run: frozen base, P+1 outlets, loads and exports like any run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.training

NEW = "bbc-fulltext"


@pytest.fixture(scope="module")
def adapted(tiny_run: Path, bbc_small: Path, bbc_label_map: Path, allsides_path: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    from newsmtl.cli import main

    out = tmp_path_factory.mktemp("adapt") / "run"
    status = main(
        ["adapt", str(tiny_run), "--data", str(bbc_small), "--publication", NEW, "--out", str(out),
         "--label-map", str(bbc_label_map), "--max-train", "48", "--epochs", "3", "--negatives", str(allsides_path),
         "--threads", "1"]
    )
    assert status == 0
    return out


def _state(run_dir: Path) -> dict[str, Any]:
    from newsmtl.model import load_run

    return {k: v.clone() for k, v in load_run(run_dir).net.state_dict().items()}


def test_adapted_run_has_one_more_publication(tiny_run: Path, adapted: Path) -> None:
    from newsmtl.model import load_run

    base, new = load_run(tiny_run), load_run(adapted)
    assert new.labels["publications"] == [*base.labels["publications"], NEW]
    assert new.model_config.num_publications == base.model_config.num_publications + 1
    assert new.labels["topics"] == base.labels["topics"]
    for name in ("checkpoint.pt", "tokenizer.json", "config.json", "metrics.json"):
        assert (adapted / name).is_file(), name
    metrics = json.loads((adapted / "metrics.json").read_text(encoding="utf-8"))
    ev = metrics["adapt"]["eval"]
    assert ev["n"] > 0 and 0.0 <= ev["topic.accuracy"] <= 1.0 and 0.0 <= ev["style.top1"] <= 1.0


def test_shared_encoder_and_old_outlets_are_bit_identical(tiny_run: Path, adapted: Path) -> None:
    import torch

    base, new = _state(tiny_run), _state(adapted)
    assert set(base) == set(new)
    p = len(base["topic_head_bias"])
    per = base["private_encoders.conv.weight"].shape[0] // p  # conv channels per outlet
    grown = {
        "private_encoders.conv.weight": p * per,
        "private_encoders.conv.bias": p * per,
        "topic_head_weight": p,
        "topic_head_bias": p,
        "style_weight": p,
        "style_bias": p,
    }
    disc = [k for k in base if k.startswith("discriminator.") and base[k].shape != new[k].shape]
    for key in disc:
        grown[key] = p
    for key, old in base.items():
        if key in grown:
            n = grown[key]
            extra = per if key.startswith("private_encoders.") else 1
            assert old.shape[0] == n and new[key].shape[0] == n + extra, key
            assert torch.equal(new[key][:n], old), key
        else:
            assert torch.equal(new[key], old), key  # embedding, shared encoder, shared head, bias head
    for key in ("embedding.weight", "shared_encoder.convs.0.weight", "shared_topic_head.weight"):
        assert key in base
    # The new outlet's slice was trained: its residual topic head starts at zero and moved.
    assert new["topic_head_weight"][p].abs().sum() > 0


def test_old_outlets_predict_exactly_as_before(tiny_run: Path, adapted: Path, bbc_small: Path) -> None:
    import torch

    from newsmtl.model import load_run

    base, new = load_run(tiny_run), load_run(adapted)
    rows = [json.loads(line) for line in bbc_small.read_text(encoding="utf-8").splitlines()[:12]]
    ids, mask = base.encoder.pad(base.encoder.encode_batch([r["title"] for r in rows], [r["text"] for r in rows]))
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    p = base.model_config.num_publications
    with torch.no_grad():
        for q in [*range(p), -1]:
            pub = torch.full((len(rows),), q, dtype=torch.int64)
            a, b = base.net(ids_t, mask_t, pub), new.net(ids_t, mask_t, pub)
            assert torch.equal(a.topic_logits, b.topic_logits)
            assert torch.equal(a.style_logits, b.style_logits[:, :p])
        out = new.net(ids_t, mask_t, torch.full((len(rows),), p, dtype=torch.int64))
        assert out.topic_logits.shape == (len(rows), len(base.labels["topics"]))
        assert torch.isfinite(out.private_contribution).all()


def test_adapted_run_exports(adapted: Path, tmp_path: Path, allsides_path: Path) -> None:
    from newsmtl.cli import main

    bundle = tmp_path / "bundle"
    assert main(["export", str(adapted), "--out", str(bundle), "--data", str(allsides_path)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["labels"]["publications"][-1] == NEW


def test_analyze_runs_on_the_adapted_run(adapted: Path, allsides_path: Path, tmp_path: Path) -> None:
    from newsmtl.analysis import analyze_run

    result = analyze_run(adapted, allsides_path, tmp_path / "report", max_articles=200, projection="pca",
                         permutations=50)
    report = json.loads(result.json.read_text(encoding="utf-8"))
    assert report["probes"]["publication"]["num_classes"] == len(report["labels"]["publications"])
    assert NEW in report["relatedness"]["excluded_publications"]  # no BBC-fulltext articles in allsides


def test_bad_inputs_give_clear_errors(tiny_run: Path, bbc_small: Path, bbc_label_map: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from newsmtl.cli import main
    from newsmtl.model import load_run

    # BBC labels are not model topics: without the map the command must say so.
    status = main(["adapt", str(tiny_run), "--data", str(bbc_small), "--publication", NEW, "--out", str(tmp_path / "a")])
    assert status != 0
    assert "--label-map" in capsys.readouterr().err
    old = load_run(tiny_run).labels["publications"][0]
    status = main(["adapt", str(tiny_run), "--data", str(bbc_small), "--publication", old, "--out", str(tmp_path / "b"),
                   "--label-map", str(bbc_label_map)])
    assert status != 0
    assert "already modelled" in capsys.readouterr().err
    bad_map = tmp_path / "map.json"
    bad_map.write_text(json.dumps({"sport": "football"}), encoding="utf-8")
    status = main(["adapt", str(tiny_run), "--data", str(bbc_small), "--publication", NEW, "--out", str(tmp_path / "c"),
                   "--label-map", str(bad_map)])
    assert status != 0
    assert "not topics of the model" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_learning_curve_smoke(tiny_run: Path, bbc_small: Path, allsides_path: Path) -> None:
    from newsmtl.analysis import AdaptConfig, adapt_learning_curve

    cfg = AdaptConfig(min_steps=5, max_steps=10, epochs=1, max_negatives=64, threads=1)
    result = adapt_learning_curve(
        tiny_run, bbc_small, sizes=(8, 16), test_size=24, repeats=1, cfg=cfg, negatives_path=allsides_path
    )
    assert [(r["method"], r["size"]) for r in result["rows"]] == [
        ("adapt", 8), ("scratch", 8), ("adapt", 16), ("scratch", 16)
    ]
    for row in result["rows"]:
        assert 0.0 <= row["topic.accuracy"] <= 1.0 and 0.0 <= row["topic.macro_f1"] <= 1.0
    assert {(s["method"], s["size"]) for s in result["summary"]} == {
        ("adapt", 8), ("scratch", 8), ("adapt", 16), ("scratch", 16)
    }
    assert result["test"]["n"] == 24
    assert 0.0 <= result["zero_shot"]["topic.accuracy"] <= 1.0


def test_learning_curve_validation_mode_never_scores_on_the_test_set(tiny_run: Path, bbc_small: Path,
                                                                     allsides_path: Path) -> None:
    from newsmtl.analysis import AdaptConfig, adapt_learning_curve

    cfg = AdaptConfig(min_steps=5, max_steps=5, epochs=1, max_negatives=32, threads=1)
    common = {"sizes": (8,), "test_size": 16, "repeats": 1, "cfg": cfg, "negatives_path": allsides_path}
    test = adapt_learning_curve(tiny_run, bbc_small, scratch=False, **common)  # type: ignore[arg-type]
    val = adapt_learning_curve(tiny_run, bbc_small, scratch_lr=1e-3, validation=True, **common)  # type: ignore[arg-type]
    assert test["held_out"] == "test set" and val["held_out"].startswith("validation")
    assert len(val["test"]["ids"]) == len(test["test"]["ids"]) == 16
    assert not set(val["test"]["ids"]) & set(test["test"]["ids"])
    assert val["pool"] == test["pool"] - 16
    assert val["scratch"]["lr"] == 1e-3
    assert [r["method"] for r in test["rows"]] == ["adapt"]
