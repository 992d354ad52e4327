"""``newsmtl demo`` in a clean virtual environment with only ``newsmtl[serve]``: no torch, no Kafka.

The project is built into a wheel from a copy of its sources (the shared working tree stays
untouched), then installed with pip into a fresh ``python -m venv``. The dependencies come
from a local wheelhouse (``$NEWSMTL_WHEELHOUSE``, default ``~/.cache/newsmtl-wheelhouse``)
without touching the index; the first run fills the wheelhouse with ``pip download``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from newsmtl.demo import load_samples

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(os.environ.get("NEWSMTL_WHEELHOUSE", Path.home() / ".cache" / "newsmtl-wheelhouse"))
DEFAULT_BUNDLE = REPO_ROOT / "src" / "newsmtl" / "_resources" / "default_bundle"


def run(
    command: list[str], *, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def checked(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = run(command, **kwargs)
    assert proc.returncode == 0, "%s failed (%d):\n%s\n%s" % (
        command,
        proc.returncode,
        proc.stdout[-3000:],
        proc.stderr[-3000:],
    )
    return proc


def copy_sources(work: Path) -> Path:
    """pyproject.toml, README.md and src/ copied out, so that building leaves the checkout alone."""
    tree = work / "source"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO_ROOT / name).is_file():
            shutil.copy2(REPO_ROOT / name, tree / name)
    shutil.copytree(
        REPO_ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    )
    return tree


def offline_or_fill(offline: list[str], fill: list[str], env: dict[str, str]) -> None:
    """Run ``offline`` (no index); if it fails, fill the wheelhouse from the index once and retry."""
    if run(offline, env=env).returncode != 0:
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        checked(fill, env=env)
        for stale in WHEELHOUSE.glob("newsmtl-*.whl"):
            stale.unlink()  # the project itself always comes from the fresh build
        checked(offline, env=env)


def test_demo_runs_in_a_clean_serving_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    checked([sys.executable, "-m", "venv", str(venv)])
    python, newsmtl = venv / "bin" / "python", venv / "bin" / "newsmtl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = "%s:%s" % (venv / "bin", env.get("PATH", ""))
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    local = ["--no-index", "--find-links", str(WHEELHOUSE)]

    # Build the wheel with the clean venv's pip in an isolated build environment (the build
    # backend from pyproject's [build-system], also from the wheelhouse).
    tree, dist = copy_sources(tmp_path), tmp_path / "dist"
    offline_or_fill(
        pip + ["wheel", "-q", "--no-deps", *local, "-w", str(dist), str(tree)],
        pip + ["download", "-q", "-d", str(WHEELHOUSE), "setuptools>=69", "wheel"],
        env,
    )
    (wheel,) = dist.glob("newsmtl-*.whl")
    requirement = "%s[serve]" % wheel
    offline_or_fill(
        pip + ["install", "-q", *local, requirement],
        pip + ["download", "-q", "-d", str(WHEELHOUSE), requirement],
        env,
    )

    # Serving dependencies only: no torch, but ONNX Runtime.
    checked(
        [str(python), "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"],
        env=env,
    )
    checked([str(python), "-c", "import onnxruntime, newsmtl.consumer, newsmtl.demo"], env=env)
    listed = checked(pip + ["list", "--format=freeze"], env=env).stdout.lower()
    assert "torch" not in listed and "onnxruntime" in listed and "newsmtl" in listed

    ids = [a.id for a in load_samples()]
    # The README's main command: the packaged default model, no --bundle, no torch.
    assert (DEFAULT_BUNDLE / "manifest.json").is_file(), "the default model bundle must be packaged"
    demo = checked([str(newsmtl), "demo", "--width", "240"], env=env, timeout=120)
    assert "newsmtl-default" in demo.stdout
    for article_id in ids:
        assert article_id in demo.stdout, article_id
    assert "newsmtl demo: %d sample articles" % len(ids) in demo.stdout
    # The wheel carried the samples as package data: the installed copy is the one the demo read.
    installed = checked(
        [str(python), "-c", "import newsmtl.demo, sys; sys.stdout.write(newsmtl.demo.__file__)"], env=env
    )
    assert "site-packages" in installed.stdout
