"""Timers: ns per decision (one thread), decisions/s (threads, asyncio tasks), bytes per key.

Every timer runs the same loop for every library, so the loop's own cost is the same for all.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.adapters import Contender


def key_sequence(keys: int, n: int, prefix: str = "bench") -> list[str]:
    """``n`` keys cycling over ``keys`` distinct ones (one string object per distinct key)."""
    distinct = [f"{prefix}:{i}" for i in range(keys)]
    return [distinct[i % keys] for i in range(n)]


def ns_per_decision(hit: Callable[[str], Any], seq: Sequence[str]) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for key in seq:
            hit(key)
        elapsed = time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / len(seq)


def threads_rate(hit: Callable[[str], Any], seq: Sequence[str], threads: int) -> float:
    """Decisions per second with ``threads`` threads sharing ``seq``."""
    chunks = [seq[i::threads] for i in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(chunk: Sequence[str]) -> None:
        barrier.wait()
        for key in chunk:
            hit(key)

    workers = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return len(seq) / (time.perf_counter() - start)


async def tasks_rate(hit: Callable[[str], Any], seq: Sequence[str], tasks: int) -> float:
    """Decisions per second with ``tasks`` asyncio tasks sharing ``seq``."""
    chunks = [seq[i::tasks] for i in range(tasks)]

    async def work(chunk: Sequence[str]) -> None:
        for key in chunk:
            await hit(key)

    start = time.perf_counter()
    await asyncio.gather(*(work(chunk) for chunk in chunks))
    return len(seq) / (time.perf_counter() - start)


def bytes_per_key(contender: Contender, keys: int) -> float:
    """Memory held per key after one hit on each of ``keys`` new keys (tracemalloc).

    The key strings exist before tracing starts, as they would in an application (they come with
    the request); whatever a library derives from them (prefixed keys, objects) is counted.
    """
    distinct = [f"mem:{i}" for i in range(keys)]
    hit = contender.hit
    hit("mem:warm-up")  # lazily created tables, scripts, locks
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in distinct:
            hit(key)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / keys


def summarize(samples: Sequence[float]) -> tuple[float, float]:
    """The median and the spread ((max - min) / median, as a fraction)."""
    median = statistics.median(samples)
    spread = (max(samples) - min(samples)) / median if median else 0.0
    return median, spread
