"""docs/grafana-dashboard.json: valid JSON, the panels the README promises, and PromQL that uses
only what PrometheusObserver exports (metric names and, in selectors, their labels)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ratekeeper.observability import PrometheusObserver
from tests.observability.events import standard_events

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
PANELS = {
    "Decisions/s by result",
    "Denial ratio",
    "Near-limit rate",
    "Store round trip p50 / p99",
    "Acquire wait p99",
    "Acquire timeouts/s",
    "In flight",
    "Store errors/s",
}
METRIC = re.compile(r"\b(ratekeeper_\w+)(?:\{([^}]*)\})?")
BY = re.compile(r"\bby\s*\(([^)]*)\)")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, as the observer exposes them after one of every event."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    for event in standard_events():
        observer.observe(event)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def expressions() -> list[str]:
    data = dashboard()
    exprs = [t["expr"] for p in data["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in data["templating"]["list"] if "definition" in v]
    return exprs


def test_is_a_grafana_dashboard_with_the_promised_panels() -> None:
    data = dashboard()
    assert data["title"] == "ratekeeper" and isinstance(data["schemaVersion"], int)
    assert {p["title"] for p in data["panels"]} == PANELS
    assert len({p["id"] for p in data["panels"]}) == len(data["panels"])
    for panel in data["panels"]:
        assert panel["type"] == "timeseries" and panel["targets"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["limiter"]["query"]["query"] == variables["limiter"]["definition"]


def test_every_expression_uses_only_exported_metrics_and_labels() -> None:
    metrics = exported()
    all_labels = set().union(*metrics.values())
    for expr in expressions():
        used = METRIC.findall(expr)
        assert used, f"no ratekeeper metric in {expr!r}"
        for name, selector in used:
            assert name in metrics, f"{expr!r} uses {name}, which is not exported"
            keys = {m.split("=")[0].strip(" !~") for m in selector.split(",") if m.strip()}
            assert keys <= metrics[name], f"{expr!r}: {name} has no label in {keys}"
        for group in BY.findall(expr):
            assert {g.strip() for g in group.split(",")} <= all_labels, expr
        assert "limiter" in all_labels and not re.search(r"\bkey\b", expr)
