"""The Grafana dashboard queries exactly the metrics of docs/CONTRACTS.md."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.deploy._helm import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "newsmtl-dashboard.json"


def contract_metrics() -> dict[str, set[str]]:
    """Metric name -> label names, from the Metrics section of docs/CONTRACTS.md."""
    text = (REPO / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for name, labels in re.findall(r"`(newsmtl_[a-z_]+)(?:\{([a-z_,]+)\})?`", section):
        found[name] = set(filter(None, labels.split(",")))
    return found


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def base_name(series: str, contract: dict[str, set[str]]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series[: -len(suffix)] in contract:
            return series[: -len(suffix)]
    return series


def test_dashboard_uses_only_and_all_contract_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    contract = contract_metrics()
    assert len(contract) == 10, contract
    used = {base_name(s, contract) for e in exprs(dashboard) for s in re.findall(r"newsmtl_[a-z_]+", e)}
    assert used <= set(contract), sorted(used - set(contract))
    assert used == set(contract), "contract metrics without a panel: %s" % sorted(set(contract) - used)


def test_dashboard_labels_exist_in_the_contract() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    contract = contract_metrics()
    all_labels = set().union(*contract.values())
    # Labels Prometheus adds on scrape (job, pod) plus the histogram bucket label.
    scrape_labels = {"job", "pod", "le"}
    for expr in exprs(dashboard):
        for group in re.findall(r"by \(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",")}
            assert labels <= all_labels | scrape_labels, (expr, labels - all_labels - scrape_labels)


def test_latency_panels_are_histogram_quantiles() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for metric in ("newsmtl_inference_seconds", "newsmtl_end_to_end_seconds", "newsmtl_batch_size"):
        quantiles = [e for e in exprs(dashboard) if "histogram_quantile" in e and metric + "_bucket" in e]
        assert len(quantiles) >= 3, metric
        assert all("by (le)" in e and "rate(" in e for e in quantiles), quantiles
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Consumer lag per partition", "Errors by kind", "Ready replicas", "Model version"} <= titles
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
