"""End-to-end training and evaluation through the CLI (the ``tiny_run`` session fixture)."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from newsmtl.cli import main
from newsmtl.model import NullReporter, load_run, preset_config, train

pytestmark = pytest.mark.training

HEADLINE_KEYS = ("topic.macro_f1", "topic.accuracy", "style.top1", "style.top3", "bias.macro_f1")


def test_tiny_run_directory_follows_the_contract(tiny_run: Path) -> None:
    for name in ("checkpoint.pt", "last.pt", "tokenizer.json", "config.json", "metrics.json"):
        assert (tiny_run / name).is_file(), name
    ckpt = torch.load(tiny_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["format"] == "newsmtl-run/1"
    for key in ("model_config", "train_config", "state_dict", "labels", "text_config", "metrics", "data", "created_at"):
        assert key in ckpt, key
    assert set(ckpt["labels"]) == {"topics", "publications", "bias"}
    assert len(ckpt["labels"]["topics"]) == 11 and len(ckpt["labels"]["publications"]) == 6
    assert ckpt["labels"]["bias"] == ["center", "left", "right"]
    assert set(HEADLINE_KEYS) <= set(ckpt["metrics"]["dev"])
    assert {"path", "seed", "split_sizes"} <= set(ckpt["data"])
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["train_config"]["preset"] == "tiny" and config["labels"] == ckpt["labels"]

    run = load_run(tiny_run)
    assert not run.net.training
    assert run.encoder.vocab_size <= run.model_config.vocab_size
    assert run.encoder.config == ckpt["text_config"]
    ids = run.encoder.encode_batch(["Senate passes budget"], ["WASHINGTON (Reuters) - The Senate voted."])
    input_ids, mask = run.encoder.pad(ids)
    out = run.net(torch.from_numpy(input_ids), torch.from_numpy(mask), torch.tensor([-1]))
    assert out.topic_logits.shape == (1, 11) and out.style_logits.shape == (1, 6)


def test_evaluate_report_beats_the_majority_class(tiny_run: Path, allsides_path: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "report" / "REPORT.json"
    assert main(["evaluate", str(tiny_run), "--data", str(allsides_path), "--out", str(report_path)]) == 0
    report: dict[str, Any] = json.loads(report_path.read_text())
    assert report_path.with_suffix(".md").read_text().startswith("# Evaluation report")
    for key in HEADLINE_KEYS:
        assert isinstance(report[key], float), key
        assert isinstance(report["baseline." + key], float), key
    assert report["data"]["split"] == "test" and report["data"]["split_check"].startswith("ok")
    assert report["data"]["n"] == json.loads((tiny_run / "config.json").read_text())["data"]["split_sizes"]["test"]
    assert report["topic.macro_f1"] > report["baseline.topic.macro_f1"] + 0.1
    assert report["topic.accuracy"] > report["baseline.topic.accuracy"]
    assert report["style.top1"] > report["baseline.style.top1"]
    assert report["bias.macro_f1"] > report["baseline.bias.macro_f1"]
    topic = report["topic"]
    assert set(topic["per_publication"]) == {*load_run(tiny_run).labels["publications"], "(other outlets)"}
    assert topic["unknown_outlets"]["n"] + topic["modelled_outlets"]["n"] == report["data"]["n"]
    assert len(topic["confusion"]["matrix"]) == 11 and sum(map(sum, topic["confusion"]["matrix"])) == report["data"]["n"]
    assert len(report["style"]["confusion"]["matrix"]) == 6
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["test"]["topic.macro_f1"] == report["topic.macro_f1"]


def _small_copy(src: Path, dst: Path, n: int) -> Path:
    with gzip.open(src, "rt", encoding="utf-8") as fin, dst.open("w", encoding="utf-8") as fout:
        fout.writelines(itertools.islice(fin, n))
    return dst


def test_evaluate_refuses_a_split_it_cannot_reproduce(
    tiny_run: Path, allsides_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _small_copy(allsides_path, tmp_path / "other.jsonl", 300)
    out = tmp_path / "r.json"
    assert main(["evaluate", str(tiny_run), "--data", str(other), "--out", str(out)]) == 2
    assert "does not reproduce the training split" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "--data", str(other), "--out", str(out), "--split", "all"]) == 0
    assert json.loads(out.read_text())["data"]["n"] == 300


def test_train_reports_missing_fields_and_existing_runs(
    tiny_run: Path, allsides_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "t", "body": "b", "topic_coarse": "x", "publication": "a.com"}) + "\n")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r"), "--preset", "tiny"]) == 2
    assert "required field 'text' (column 'text') is missing" in capsys.readouterr().err
    assert main(["train", "--data", str(allsides_path), "--out", str(tiny_run), "--preset", "tiny"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r2"), "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    mask = tmp_path / "mask.json"
    mask.write_text(json.dumps({"outlets": {"cnn.com": "CNN"}}))
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r3"), "--mask-config", str(mask)]) == 2
    assert "must map outlet -> list of names" in capsys.readouterr().err


class _StopAfterFirstEpoch(NullReporter):
    def on_epoch(self, *, epoch: int, metrics: dict[str, Any], improved: bool, seconds: float) -> None:
        raise KeyboardInterrupt


def test_same_seed_same_metrics_and_exact_resume(allsides_path: Path, tmp_path: Path) -> None:
    cfg = preset_config(
        "tiny", max_articles=600, min_publication_articles=25, vocab_size=800, max_length=48, title_max_tokens=12,
        epochs=2, patience=2, threads=1, seed=21, masking={"outlets": {"example.org": ["Example Daily"]}},
    )
    cache = tmp_path / "cache"
    a = train(allsides_path, tmp_path / "a", cfg, cache_dir=cache)  # fills the token cache
    b = train(allsides_path, tmp_path / "b", cfg, cache_dir=cache)  # reads it
    assert len(list(cache.glob("*/ids-*-train.npz"))) == 1
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    assert a.dev_metrics == b.dev_metrics
    masker = load_run(tmp_path / "a").encoder.masker  # the override travels with the run
    assert masker.mask("Example Daily and Reuters") == "[OUTLET] and [OUTLET]"
    history_a = json.loads((tmp_path / "a" / "metrics.json").read_text())["history"]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in history_a]
    assert strip == [
        {k: v for k, v in h.items() if k != "seconds"}
        for h in json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    ]

    with pytest.raises(KeyboardInterrupt):
        train(allsides_path, tmp_path / "c", cfg, reporter=_StopAfterFirstEpoch())
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"epochs": 99}))  # ignored on --resume: the run's own config wins
    assert main(["train", "--data", str(allsides_path), "--out", str(tmp_path / "c"), "--resume",
                 "--config", str(cfg_file), "--no-progress"]) == 0
    history_c = json.loads((tmp_path / "c" / "metrics.json").read_text())["history"]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in history_c] == strip
    assert main(["train", "--data", str(allsides_path), "--out", str(tmp_path / "d"), "--resume"]) == 2
