"""benchmarks/policies.py runs (tiny counts, memory store): the figures cannot rot. Speed is
never asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stores.backends.redis import env_url

ROOT = Path(__file__).resolve().parent.parent


def test_policies_benchmark_smoke() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    done = subprocess.run(
        [sys.executable, "benchmarks/policies.py", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for case in ("hit", "3 separate hits", "chain of 3", "priority class", "reserve + commit"):
        assert case in done.stdout


@pytest.mark.redis
def test_policies_benchmark_smoke_on_redis() -> None:
    """Redis standalone and Cluster (the chain's keys in different hash slots)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    urls = [
        "--redis-url",
        env_url("RATEKEEPER_REDIS_URL"),
        "--redis-cluster-url",
        env_url("RATEKEEPER_REDIS_CLUSTER_URL"),
    ]
    done = subprocess.run(
        [sys.executable, "benchmarks/policies.py", "--smoke", *urls],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "redis:" in done.stdout and "redis cluster:" in done.stdout
