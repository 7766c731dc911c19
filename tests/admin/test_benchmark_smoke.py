"""The decision-service benchmark runs (tiny durations, memory store): every case prints a row.
Speed is never asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_decision_service_benchmark_smoke() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.decision_service", "--smoke", "--redis-url", ""],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| memory |")]
    assert [row.split("|")[2].strip() for row in rows] == ["1", "50", "1, batches of 100"]
    assert all(float(row.split("|")[3].replace(",", "")) > 0 for row in rows)
