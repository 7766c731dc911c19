"""The memory store at scale: resident bytes per key and hit time after ``n`` keys, per library.

Each (library, algorithm, size) runs in a fresh Python process (``python -m benchmarks.scale``),
so one library's heap never weighs on another's: it makes the ``n`` key strings first (they come
with the requests in an application), reads its resident set size, hits each key once, collects
garbage, reads it again (the difference over ``n`` is the bytes per key), then times hits on keys
drawn at random from the ``n`` (a cache-cold lookup, as on a busy server), in rounds.

Bounded: a size whose estimate (bytes per key measured at the previous size, times the size)
exceeds ``MEMORY_BUDGET`` is left out and said so; a process that exceeds ``TIMEOUT`` is stopped.
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import adapters as ad

LIBRARIES = ("ratekeeper", "limits", "throttled-py", "pyrate-limiter")
MEMORY_BUDGET = 12 * 2**30  # bytes a library may use at one size (the machine has 24 GiB)
TIMEOUT = 1800.0  # seconds per (library, size)
HIT_ROUNDS = 7
HITS_PER_ROUND = 20_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def factory(library: str, family: str) -> ad.Factory | None:
    if library == "ratekeeper":
        return ad.ratekeeper(family)
    if library == "limits":
        return ad.limits_(family)
    if library == "throttled-py":
        return ad.throttled(family)
    return ad.pyrate(family)


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def measure(library: str, family: str, n: int) -> dict[str, Any] | None:
    build = factory(library, family)
    if build is None:
        return None
    contender = build()
    hit = contender.hit
    keys = [f"scale:{i}" for i in range(n)]
    hit("scale:warm-up")
    gc.collect()
    before = resident()
    started = time.perf_counter()
    for key in keys:
        hit(key)
    fill = time.perf_counter() - started
    gc.collect()
    after = resident()
    rng = random.Random(17)
    hit_ns = []
    for _ in range(HIT_ROUNDS):
        sample = [keys[rng.randrange(n)] for _ in range(HITS_PER_ROUND)]
        gc.disable()
        start = time.perf_counter_ns()
        for key in sample:
            hit(key)
        hit_ns.append((time.perf_counter_ns() - start) / HITS_PER_ROUND)
        gc.enable()
    contender.close()
    return {
        "algorithm": contender.algorithm,
        "bytes_per_key": (after - before) / n,
        "hit_ns": hit_ns,
        "fill_s": fill,
        "resident": after,
    }


def measure_in_subprocess(library: str, family: str, n: int) -> dict[str, Any] | None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    command = [sys.executable, "-m", "benchmarks.scale", library, family, str(n)]
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"left out: longer than {TIMEOUT:.0f} s"}
    if done.returncode != 0:
        return {"error": f"failed: {done.stderr.strip()[-300:]}"}
    result: dict[str, Any] | None = json.loads(done.stdout)
    return result


def too_big(result: dict[str, Any], size: int, sizes: list[int] | Any) -> str | bool:
    """Why the next size would not fit (``False`` when it would)."""
    later = [s for s in sizes if s > size]
    if not later:
        return False
    estimate = result["resident"] + result["bytes_per_key"] * (later[0] - size)
    if estimate > MEMORY_BUDGET:
        return f"about {estimate / 2**30:.1f} GiB at {later[0]:,} keys, over the budget"
    return False


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
