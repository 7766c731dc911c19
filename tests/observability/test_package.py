"""The package: its names, no client library imported until an observer needs it, and the
observer benchmark runs (its figures are never asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ratekeeper.observability as observability

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}


def test_exports() -> None:
    assert {
        "PrometheusObserver",
        "StatsdObserver",
        "OpenTelemetryObserver",
        "AuditLog",
        "metrics_app",
        "metrics_wsgi_app",
    } <= set(observability.__all__)
    assert all(hasattr(observability, name) for name in observability.__all__)


def test_importing_the_package_imports_no_client_library() -> None:
    code = (
        "import sys, ratekeeper.observability\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_observer_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/observers.py", "--smoke"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line[:2] == "| "]
    assert rows[1:] == [
        "none",
        "null observer",
        "prometheus",
        "statsd, dead port",
        "statsd, live",
        "dogstatsd, live",
        "opentelemetry",
        "opentelemetry + spans",
        "audit log",
        "all",
        "none, denied",
        "audit log, denied",
    ]
