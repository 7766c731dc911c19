"""benchmarks/policies.py runs (tiny counts, memory store): the figures cannot rot. Speed is
never asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
