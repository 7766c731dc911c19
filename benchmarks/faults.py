"""Decision latency of every network store under faults, with many callers at once.

For each store (Redis standalone, PostgreSQL, NATS), sync (8 threads) and async (40 tasks), all on
one key, each caller making 2 decisions back to back, with ``on_store_error="allow"`` and the
library's default timeouts, a FaultProxy between the store and its server:

    dead (reset)     every connection, old and new, reset
    dead (refused)   the proxy is gone: open connections reset, new ones refused
    frozen           blackhole: connections stay open, nothing comes back
    slow 0.2 s       every round trip 0.2 s longer, on connections opened before
    slow 0.2 s cold  the same, on a store that has not connected yet (connecting takes trips too)
    slow 4 s         every round trip 4 s longer (2 s each way)

It prints the median and worst decision latency, and what the decisions were (``real``: answered
by the store, ``fallback``: by on_store_error, ``stuck``: no answer within the 3 s watch).

    scripts/services start DIR && source DIR/env
    PYTHONPATH=.:src .venv/bin/python benchmarks/faults.py [STORE ...]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable

from tests.faultproxy import FaultProxy, Mode
from tests.stores.backends import Backend, all_backends
from tests.stores.test_faults import (
    ASYNC_CALLERS,
    SYNC_CALLERS,
    Outcome,
    factories,
    proxy_for,
    run_tasks,
    run_threads,
)

from ratekeeper import AsyncRateLimiter, RateLimiter

LIMITS = "100000/second"
SLOW_LATENCY = 0.1  # seconds each way: 0.2 s per round trip
VERY_SLOW_LATENCY = 2.0  # seconds each way: 4 s per round trip
HEAL_PAUSE = 0.2  # seconds between scenarios

# name -> (proxy mode, latency each way, warm the store first, close the proxy instead)
SCENARIOS: dict[str, tuple[Mode, float, bool, bool]] = {
    "dead (reset)": ("reset", 0.0, True, False),
    "dead (refused)": ("pass", 0.0, True, True),
    "frozen": ("blackhole", 0.0, True, False),
    "slow 0.2 s": ("latency", SLOW_LATENCY, True, False),
    "slow 0.2 s cold": ("latency", SLOW_LATENCY, False, False),
    "slow 4 s": ("latency", VERY_SLOW_LATENCY, True, False),
}


def describe(outcomes: list[Outcome]) -> tuple[float, float, str]:
    seconds = [o.seconds for o in outcomes]
    words = {"allowed": "real", "fallback_allowed": "fallback"}
    kinds = Counter(words.get(o.kind, o.kind) for o in outcomes)
    return statistics.median(seconds), max(seconds), ", ".join(f"{n} {k}" for k, n in kinds.items())


def inject(proxy: FaultProxy, scenario: str) -> None:
    mode, latency, _, close = SCENARIOS[scenario]
    if close:
        proxy.close()
    else:
        proxy.set_mode(mode, latency=latency)


def sync_case(backend: Backend, scenario: str) -> list[Outcome]:
    with proxy_for(backend) as proxy:
        store = factories(backend, proxy)[0]()
        limiter = RateLimiter(LIMITS, store=store, on_store_error="allow")
        key = f"bench:faults:{time.monotonic_ns()}"
        if SCENARIOS[scenario][2]:
            run_threads(limiter.hit, [key] * SYNC_CALLERS)
        inject(proxy, scenario)
        outcomes = run_threads(limiter.hit, [key] * SYNC_CALLERS)
        if not proxy.closed:
            proxy.set_mode("pass")
    store.close()
    return outcomes


async def async_case(backend: Backend, scenario: str) -> list[Outcome]:
    with proxy_for(backend) as proxy:
        store = factories(backend, proxy)[1]()
        limiter = AsyncRateLimiter(LIMITS, store=store, on_store_error="allow")
        key = f"bench:faults:{time.monotonic_ns()}"
        if SCENARIOS[scenario][2]:
            await run_tasks(limiter.hit, [key] * ASYNC_CALLERS)
        inject(proxy, scenario)
        outcomes = await run_tasks(limiter.hit, [key] * ASYNC_CALLERS)
        if not proxy.closed:
            proxy.set_mode("pass")
    try:
        await asyncio.wait_for(store.close(), 5)
    except Exception as exc:  # a report, not a test: note it and go on
        print(f"  ({backend.name} async close failed: {type(exc).__name__})", file=sys.stderr)
    return outcomes


def main(names: list[str]) -> None:
    logging.disable(logging.WARNING)  # drivers log every failed connection attempt
    backends = [b for b in all_backends() if b.make_at is not None and b.url is not None]
    backends = [b for b in backends if not names or b.name in names]
    runs: list[tuple[str, Callable[[Backend, str], list[Outcome]]]] = [
        ("sync", sync_case),
        ("async", lambda b, s: asyncio.run(async_case(b, s))),
    ]
    header = f"| {'store':8} | {'driver':6} | {'fault':16} | median s | worst s | decisions"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:]))
    for backend in backends:
        for driver, run in runs:
            for scenario in SCENARIOS:
                median, worst, kinds = describe(run(backend, scenario))
                row = f"| {backend.name:8} | {driver:6} | {scenario:16} | {median:8.3f} | "
                print(row + f"{worst:7.3f} | {kinds}", flush=True)
                time.sleep(HEAL_PAUSE)


if __name__ == "__main__":
    main(sys.argv[1:])
