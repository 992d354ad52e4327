"""Helpers of the deployment checks: the pinned helm/kubeconform binaries and chart rendering.

The tools come from deploy/checks/chart.sh (Go module proxy, cached under
${XDG_CACHE_HOME:-~/.cache}/newsmtl); the first session installs them, which takes minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "newsmtl"
CHART_SH = REPO / "deploy" / "checks" / "chart.sh"
# Installing helm with `go install` on a cold cache takes a few minutes on two cores.
TOOLS_TIMEOUT_S = 1800

# Value-file layers rendered by the tests: chart.sh validates the same combinations.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "default": (),
    "gpu": ("values-gpu.yaml",),
    "keda-disabled-hpa": ("ci/hpa-values.yaml",),
    "statefulset-sasl": ("ci/statefulset-sasl-values.yaml",),
    "gpu-statefulset": ("values-gpu.yaml", "ci/statefulset-sasl-values.yaml"),
    "fixed-replicas-pvc": ("ci/fixed-pvc-values.yaml",),
    "image-volume-scale-to-zero": ("ci/image-volume-values.yaml",),
}


def chart_sh_env() -> dict[str, str]:
    # chart.sh runs k8s_schemas.py, which reads CRDs with PyYAML: use this interpreter.
    return {**os.environ, "PYTHON": sys.executable}


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubeconform: Path
    schemas: Path
    kube_version: str
    compose_schema: Path


def install_tools() -> Tools:
    try:
        proc = subprocess.run(
            ["bash", str(CHART_SH), "tools"],
            capture_output=True,
            text=True,
            timeout=TOOLS_TIMEOUT_S,
            env=chart_sh_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail("deploy/checks/chart.sh tools took over %ds: %s" % (TOOLS_TIMEOUT_S, exc.stderr))
    if proc.returncode != 0:
        pytest.fail("deploy/checks/chart.sh tools failed (rc=%d):\n%s" % (proc.returncode, proc.stderr))
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return Tools(
        helm=Path(found["helm"]),
        kubeconform=Path(found["kubeconform"]),
        schemas=Path(found["schemas"]),
        kube_version=found["kube_version"],
        compose_schema=Path(found["compose_schema"]),
    )


def helm_template(
    tools: Tools, value_files: Sequence[str] = (), sets: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    args = [str(tools.helm), "template", "newsmtl", str(CHART), "--namespace", "newsmtl"]
    args += ["--kube-version", tools.kube_version]
    for name in value_files:
        args += ["-f", str(CHART / name)]
    for item in sets:
        args += ["--set", item]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def render(tools: Tools, value_files: Sequence[str] = (), sets: Sequence[str] = ()) -> list[dict[str, Any]]:
    proc = helm_template(tools, value_files, sets)
    assert proc.returncode == 0, "helm template failed:\n%s" % proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def merged_values(value_files: Sequence[str]) -> dict[str, Any]:
    """values.yaml with the value files layered on top, the way helm merges them."""

    def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in top.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for name in value_files:
        values = merge(values, yaml.safe_load((CHART / name).read_text(encoding="utf-8")) or {})
    return values
