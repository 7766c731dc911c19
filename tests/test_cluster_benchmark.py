"""benchmarks/cluster.py runs (tiny counts, its own private clusters): every case has its row,
so the scale-out figures cannot rot. Speed is never asserted."""

from __future__ import annotations

import dataclasses

import pytest
from benchmarks import cluster
from benchmarks.results import SMOKE

pytestmark = pytest.mark.redis

TINY = dataclasses.replace(SMOKE, repeats=1, async_n=40, warmup=10)


def test_cluster_benchmark_measures_every_case() -> None:
    rows = cluster.measure(TINY)
    seen = {(family, contender.library, contender.algorithm) for family, contender, _ in rows}
    libraries = {
        ("ratekeeper", "fixed_window, pipelined"),
        ("ratekeeper", "fixed_window, pipelining=False"),
    }
    libraries |= {("limits", "fixed window"), ("throttled-py", "fixed window")}
    families = {cluster.family(m, p) for m in cluster.MASTERS for p in cluster.PROCESSES}
    assert seen == {(family, *library) for family in families for library in libraries}
    assert all(len(samples) == TINY.repeats and min(samples) > 0 for _, _, samples in rows)
