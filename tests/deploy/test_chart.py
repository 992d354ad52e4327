"""deploy/checks/chart.sh end to end, and proof that its offline validation rejects bad manifests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._helm import CHART_SH, SCENARIOS, TOOLS_TIMEOUT_S, Tools, chart_sh_env, render

# The first test to use `tools` may install helm and kubeconform (minutes on a cold cache).
pytestmark = pytest.mark.timeout(TOOLS_TIMEOUT_S + 600)


@pytest.mark.slow
def test_chart_sh_lints_renders_and_validates_every_scenario(tools: Tools) -> None:
    # `tools` first, so the (possibly minutes-long) installation is reported on its own.
    proc = subprocess.run(
        ["bash", str(CHART_SH)],
        capture_output=True,
        text=True,
        timeout=TOOLS_TIMEOUT_S,
        env=chart_sh_env(),
        check=False,
    )
    assert proc.returncode == 0, "chart.sh failed:\n%s\n%s" % (proc.stdout[-4000:], proc.stderr[-4000:])
    assert "all %d scenarios lint, render and validate" % len(SCENARIOS) in proc.stdout
    # Every rendering was checked against real schemas, none skipped for want of one.
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("Summary:")]
    assert len(summaries) == len(SCENARIOS)
    assert all("Invalid: 0, Errors: 0, Skipped: 0" in line for line in summaries), summaries


def kubeconform(tools: Tools, docs: list[dict[str, Any]], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    return subprocess.run(
        [
            str(tools.kubeconform),
            "-strict",
            "-summary",
            "-kubernetes-version",
            tools.kube_version,
            "-schema-location",
            str(tools.schemas),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_offline_schemas_accept_the_chart(tools: Tools, tmp_path: Path) -> None:
    docs = render(tools, ("ci/statefulset-sasl-values.yaml",))
    proc = kubeconform(tools, docs, tmp_path / "ok.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid: %d, Invalid: 0, Errors: 0, Skipped: 0" % len(docs) in proc.stdout


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        # An unknown field in the pod template (typo'd securityContext key).
        (
            "StatefulSet",
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(readOnlyRootFS=True),
            "additional properties 'readOnlyRootFS' not allowed",
        ),
        # A required field missing (container name).
        (
            "StatefulSet",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
            "missing property 'name'",
        ),
        # KEDA trigger metadata is a string map: a YAML boolean is rejected by the CRD schema.
        (
            "ScaledObject",
            lambda d: d["spec"]["triggers"][0]["metadata"].update(allowIdleConsumers=False),
            "allowIdleConsumers",
        ),
        # ServiceMonitor endpoints have no `paths` (CRD schema from prometheus-operator).
        (
            "ServiceMonitor",
            lambda d: d["spec"]["endpoints"][0].update(paths=["/metrics"]),
            "additional properties 'paths' not allowed",
        ),
    ],
)
def test_offline_schemas_reject_broken_manifests(
    tools: Tools, tmp_path: Path, kind: str, mutate: Any, message: str
) -> None:
    docs = render(tools, ("ci/statefulset-sasl-values.yaml",))
    (target,) = [doc for doc in docs if doc["kind"] == kind]
    mutate(target)
    proc = kubeconform(tools, docs, tmp_path / "broken.yaml")
    assert proc.returncode != 0, "kubeconform accepted a broken %s" % kind
    assert message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
