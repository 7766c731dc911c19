"""Multi-region figures: global admissions against the limit under a steady and a bursty load, and
the local decision latency, for three regions (private redis-servers) whose links to each other
go through FaultProxy with a cross-region latency (each way).

    python -m benchmarks.multiregion [--seconds 10] [--latency 0.05] [--rate 100] [--store S]

``--store redis`` (default): three private redis-servers. ``--store postgres``: the three
regions are three table prefixes on the PostgreSQL server of ``$RATEKEEPER_POSTGRES_URL``
(``scripts/services``), reached through the proxies. Both apply a charge unconditionally
(``apply_checks``), the design's full guarantee.

One key, limit ``rate``/second (token bucket, burst = rate), demand above the limit in every
run. The ideal global admission over T seconds is rate x (1 + T) (the full bucket, then the
refill); over-admission is admitted - ideal. Steady: every region sends an even stream (together
2 x rate). Bursty: every second, every region sends ``rate`` requests at once (together
3 x rate per second, all regions in the same instant: the multi-region worst case).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from contextlib import ExitStack
from typing import Any

from tests.faultproxy import FaultProxy

from benchmarks.redis_server import RedisServer
from ratekeeper import Limit, RateLimiter
from ratekeeper.stores.base import Store
from ratekeeper.stores.multiregion import MultiRegionStore
from ratekeeper.stores.redis import RedisStore

REGIONS = 3
STEADY_DEMAND = 2.0  # x the limit, all regions together
BURST_EVERY = 1.0  # seconds between the bursts of the bursty load
FLUSH_SECONDS = 10.0
REMOTE = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, "pool_timeout": 2.0}
PG_REMOTE = {"statement_timeout": 2.0, "pool_timeout": 10.0}


def _regions(ports: list[int], proxies: list[FaultProxy], store: str) -> list[MultiRegionStore]:
    prefix = f"rkbench-mr:{uuid.uuid4().hex[:8]}"

    def make(i: int, port: int, remote: bool) -> Store:
        if store == "redis":
            url = f"redis://127.0.0.1:{port}/0"
            return RedisStore.from_url(url, prefix=prefix, **(REMOTE if remote else {}))
        from ratekeeper.stores.postgres import PostgresStore

        url = os.environ["RATEKEEPER_POSTGRES_URL"].replace(f":{ports[0]}/", f":{port}/")
        options: dict[str, Any] = {"table_prefix": f"mr{i}_", **(PG_REMOTE if remote else {})}
        return PostgresStore.from_url(url, **options)

    stores = []
    for i, port in enumerate(ports):
        remotes = [make(j, proxies[j].port, True) for j in range(len(ports)) if j != i]
        stores.append(MultiRegionStore(make(i, port, False), remotes))
    return stores


def _load(
    kind: str, limiter: RateLimiter, rate: float, seconds: float, out: dict[str, Any]
) -> None:
    admitted, latencies = 0, []
    start = time.monotonic()
    if kind == "steady":
        interval = REGIONS / (STEADY_DEMAND * rate)
        n = 0
        while time.monotonic() - start < seconds:
            t0 = time.perf_counter()
            admitted += limiter.hit("k").allowed
            latencies.append(time.perf_counter() - t0)
            n += 1
            time.sleep(max(0.0, start + n * interval - time.monotonic()))
    else:
        burst = 0
        while start + burst * BURST_EVERY < start + seconds:
            time.sleep(max(0.0, start + burst * BURST_EVERY - time.monotonic()))
            for _ in range(int(rate)):
                t0 = time.perf_counter()
                admitted += limiter.hit("k").allowed
                latencies.append(time.perf_counter() - t0)
            burst += 1
    out["admitted"] = admitted
    out["latencies"] = latencies


def _one(
    kind: str, ports: list[int], latency: float, rate: float, seconds: float, store: str
) -> dict[str, Any]:
    with ExitStack() as stack:
        proxies = [stack.enter_context(FaultProxy("127.0.0.1", port)) for port in ports]
        for proxy in proxies:
            proxy.set_mode("latency", latency=latency)
        stores = _regions(ports, proxies, store)
        limiters = [RateLimiter(Limit(int(rate), per=1), store=s) for s in stores]
        results: list[dict[str, Any]] = [{} for _ in stores]
        threads = [
            threading.Thread(target=_load, args=(kind, lim, rate, seconds, res))
            for lim, res in zip(limiters, results, strict=True)
        ]
        lag = 0.0
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            lag = max([lag] + [r.lag for s in stores for r in s.replication()])
            time.sleep(0.01)
        for region in stores:
            region.flush(FLUSH_SECONDS)
            region.close()
    latencies = sorted(x for r in results for x in r["latencies"])
    admitted = sum(r["admitted"] for r in results)
    ideal = rate * (1 + seconds) if kind == "steady" else rate * (1 + seconds - BURST_EVERY)
    return {
        "store": store,
        "load": kind,
        "seconds": seconds,
        "latency": latency,
        "limit": f"{int(rate)}/second",
        "ideal": ideal,
        "admitted": admitted,
        "over": admitted - ideal,
        "over_pct": 100.0 * (admitted - ideal) / ideal,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max_lag_ms": 1000 * lag,
    }


def run(
    seconds: float = 10.0,
    latency: float = 0.05,
    rate: float = 100,
    ports: list[int] | None = None,
    store: str = "redis",
) -> list[dict[str, Any]]:
    """Both loads; private redis-servers unless ``ports`` names three running ones."""
    with ExitStack() as stack:
        if store == "postgres":
            port = int(os.environ["RATEKEEPER_POSTGRES_URL"].rsplit(":", 1)[1].split("/")[0])
            ports = [port] * REGIONS
        elif ports is None:
            urls = [stack.enter_context(RedisServer()) for _ in range(REGIONS)]
            ports = [int(url.rsplit(":", 1)[1].split("/")[0]) for url in urls]
        return [_one(kind, ports, latency, rate, seconds, store) for kind in ("steady", "bursty")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds, each way")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--store", choices=("redis", "postgres"), default="redis")
    args = parser.parse_args()
    rows = run(args.seconds, args.latency, args.rate, store=args.store)
    print(
        "| store | load | cross-region latency | limit | ideal | admitted | over | local p50 "
        "| local p99 | max lag |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['store']} | {r['load']} | {1000 * r['latency']:.0f} ms each way | {r['limit']} "
            f"| {r['ideal']:.0f} | {r['admitted']} | {r['over']:+.0f} ({r['over_pct']:+.1f}%) "
            f"| {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['max_lag_ms']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
