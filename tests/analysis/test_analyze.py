"""``newsmtl analyze`` on the trained tiny run: a complete, well-formed report."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report_dir(tiny_run: Path, allsides_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from newsmtl.cli import main

    out = tmp_path_factory.mktemp("analysis") / "report"
    status = main(
        ["analyze", str(tiny_run), "--data", str(allsides_path), "--out", str(out), "--max-articles", "400", "--threads", "1"]
    )
    assert status == 0
    return out


@pytest.fixture(scope="module")
def report(report_dir: Path) -> dict[str, Any]:
    return json.loads((report_dir / "analysis.json").read_text(encoding="utf-8"))


def _numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [(path, float(value))]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, "%s.%s" % (path, k))]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _numbers(v, "%s[%d]" % (path, i))]
    return []


def test_every_section_present(report: dict[str, Any], report_dir: Path) -> None:
    from newsmtl.analysis import ANALYSIS_FORMAT, SECTIONS

    assert report["format"] == ANALYSIS_FORMAT
    for key in ("probes", "contributions", "relatedness", "language", "projection", "summary", "figures"):
        assert key in report, key
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert '<section id="%s">' % section in html, section


def test_numbers_are_finite(report: dict[str, Any]) -> None:
    numbers = _numbers(report)
    assert len(numbers) > 100
    bad = [(p, v) for p, v in numbers if not math.isfinite(v)]
    assert not bad
    for key, value in report["summary"].items():
        assert value is not None, key


def test_probes(report: dict[str, Any], tiny_run: Path) -> None:
    from newsmtl.model import load_run

    pubs = load_run(tiny_run).labels["publications"]
    probes = report["probes"]["publication"]
    assert probes["num_classes"] == len(pubs)
    assert probes["chance"] == pytest.approx(1 / len(pubs))
    assert 0.0 < probes["majority"] < 1.0
    for name in ("shared", "private_own", "private_all", "shared_plus_private_all"):
        probe = probes[name]
        assert 0.0 <= probe["accuracy"] <= 1.0
        assert 0.0 <= probe["macro_f1"] <= 1.0
        assert probe["n_test"] == report["data"]["n_test"]
    assert probes["shared"]["dim"] == load_run(tiny_run).model_config.shared_feature_dim
    assert probes["private_all"]["dim"] == len(pubs) * report["run"]["model_config"]["private_dim"]
    assert 0.0 <= probes["style_head_top1"] <= 1.0
    assert 0.0 <= report["probes"]["topic"]["shared"]["accuracy"] <= 1.0


def test_contributions(report: dict[str, Any]) -> None:
    rows = report["contributions"]["per_publication"]
    assert {r["publication"] for r in rows} <= set(report["labels"]["publications"])
    assert sum(r["n"] for r in rows) == report["data"]["n_test"]
    for r in rows:
        assert 0.0 <= r["shared_share"] <= 1.0
        assert r["shared_share"] + r["private_share"] == pytest.approx(1.0)


def test_relatedness_matrices(report: dict[str, Any]) -> None:
    rel = report["relatedness"]
    labels = rel["labels"]
    assert labels and set(labels) <= set(report["labels"]["publications"])
    for name in ("style_confusion", "private_cka"):
        m = rel["methods"][name]
        matrix = m["matrix"]
        assert len(matrix) == len(labels) and all(len(row) == len(labels) for row in matrix)
        for i in range(len(labels)):
            assert matrix[i][i] == pytest.approx(1.0)
            for j in range(len(labels)):
                assert matrix[i][j] == pytest.approx(matrix[j][i], abs=1e-9)
        assert sorted(m["order"]) == list(range(len(labels)))
        assert sorted(m["ordered_labels"]) == sorted(labels)
        assert set(m["clusters"]) == set(labels)
        agreement = m["bias_agreement"]
        if agreement["gap"] is not None:
            assert agreement["gap"] == pytest.approx(agreement["within"] - agreement["between"])
            assert 0.0 < agreement["p_value"] <= 1.0
    cka = rel["methods"]["private_cka"]["matrix"]
    assert all(-1e-9 <= v <= 1.0 + 1e-9 for row in cka for v in row)


def test_language_excludes_masks_and_punctuation(report: dict[str, Any]) -> None:
    lang = report["language"]
    ranked = list(lang["shared"]["overall"])
    for topic in lang["shared"]["per_topic"].values():
        ranked += topic["tokens"]
    for outlet in lang["private"]["per_publication"].values():
        ranked += outlet["tokens"]
    assert ranked
    for row in ranked:
        assert "OUTLET" not in row["token"].upper()
        assert any(ch.isalnum() for ch in row["token"]), row
        assert row["df"] >= 2
    assert lang["private"]["per_publication"], "no per-outlet language section"
    for shares in (lang["shared"]["excluded_share"], lang["private"]["excluded_share"]):
        assert set(shares) == {"outlet_mask", "special", "punctuation", "conv_bias"}
        assert all(0.0 <= v <= 1.0 for v in shares.values())


def test_projection(report: dict[str, Any]) -> None:
    proj = report["projection"]
    assert proj["n"] == len(proj["shared"]) == len(proj["private"]) == len(proj["publication"]) == len(proj["topic"])
    assert all(len(xy) == 2 for xy in proj["shared"] + proj["private"])


def test_figures_are_valid_pngs_referenced_by_the_html(report: dict[str, Any], report_dir: Path) -> None:
    from matplotlib.image import imread

    from newsmtl.analysis import FIGURE_FILES

    html = (report_dir / "index.html").read_text(encoding="utf-8")
    listed = [f["file"] for f in report["figures"]]
    assert sorted(listed) == sorted(FIGURE_FILES)
    for fig in report["figures"]:
        path = report_dir / fig["file"]
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        image = imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert len(fig["caption"]) > 80 and "look for" in fig["caption"]
        # Embedded (self-contained) and linked to the saved file.
        match = re.search(r'data-file="%s" src="data:image/png;base64,([A-Za-z0-9+/=]+)"' % re.escape(fig["file"]), html)
        assert match is not None, fig["file"]
        assert base64.b64decode(match.group(1)) == data
        assert 'href="%s"' % fig["file"] in html


def test_bad_input_gives_a_clear_error(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from newsmtl.cli import main

    missing = tmp_path / "nope.jsonl"
    status = main(["analyze", str(tiny_run), "--data", str(missing), "--out", str(tmp_path / "out")])
    assert status != 0
    assert "not found" in capsys.readouterr().err
    status = main(["analyze", str(tmp_path / "no-run"), "--data", str(missing), "--out", str(tmp_path / "out")])
    assert status != 0
    assert "run directory not found" in capsys.readouterr().err
