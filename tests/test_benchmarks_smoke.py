"""The benchmark suite's smoke run (tiny iteration counts) completes and measures every case.

Speed is never asserted here: only that every case produced its rows, so the benchmarks cannot rot.
Uses the Redis started by scripts/test (RATEKEEPER_REDIS_URL), else starts a private redis-server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(out / "rows.json")]
    command += ["--output", str(out)]
    url = os.environ.get("RATEKEEPER_REDIS_URL")
    if url:
        command += ["--redis-url", url]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILED" not in result.stdout, result.stdout
    assert (out / "benchmarks.md").read_text().startswith("# Benchmarks")
    assert (out / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
    loaded: list[dict[str, object]] = json.loads((out / "rows.json").read_text())
    return loaded


def test_every_case_has_rows(rows: list[dict[str, object]]) -> None:
    from benchmarks.results import CACHE, SECTIONS

    for section in SECTIONS:
        assert any(row["section"] == section for row in rows), f"no rows for {section!r}"
    cached = {r["algorithm"] for r in rows if r["section"] == CACHE}
    assert any("local_cache=True" in str(name) for name in cached), cached


def test_every_library_runs_every_algorithm_it_offers(rows: list[dict[str, object]]) -> None:
    from benchmarks.adapters import FAMILIES, LIMITS_MEMORY, PYRATE, THROTTLED
    from benchmarks.results import MEM_KEY, MEM_MANY, MEM_ONE, RED_ASYNC, RED_MANY, RED_ONE, THR_ONE

    def libraries(section: str, family: str) -> set[object]:
        return {r["library"] for r in rows if r["section"] == section and r["family"] == family}

    for family in FAMILIES:
        for section in (MEM_ONE, MEM_MANY, THR_ONE, MEM_KEY):
            expected = {"ratekeeper"}
            expected |= {"limits"} if family in LIMITS_MEMORY else set()
            expected |= {"throttled-py"} if family in THROTTLED else set()
            expected |= {"pyrate-limiter"} if family in PYRATE else set()
            assert libraries(section, family) == expected, (section, family)
        for section in (RED_ONE, RED_MANY, RED_ASYNC):
            expected = {"ratekeeper"}
            expected |= {"limits"} if family in LIMITS_MEMORY else set()
            expected |= {"throttled-py"} if family in THROTTLED else set()
            assert libraries(section, family) == expected, (section, family)
    floors = {r["algorithm"] for r in rows if r["family"] == "floor" and r["section"] == RED_ONE}
    assert floors == {"EVALSHA (floor)", "PING (floor)", "INCR (floor)"}


def test_numbers_are_positive(rows: list[dict[str, object]]) -> None:
    for row in rows:
        value = row["value"]
        assert isinstance(value, float) and value > 0, row
