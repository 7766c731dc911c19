"""Quick PostgreSQL and NATS figures: ns per sync ``hit`` (one key) next to a trivial round trip
on the same store in the same run. PostgreSQL: ``SELECT 1`` on a raw psycopg connection and
through the store's pool, and a one-row ``UPDATE`` (the floor of a write transaction). NATS: a KV
get through the same sync wrapper, and with raw nats-py.

    python benchmarks/pg_nats_quick.py     (reads $RATEKEEPER_POSTGRES_URL, $RATEKEEPER_NATS_URL)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

N = 3000
ROUNDS = 5


def per_call_ns(fn: Callable[[], Any], n: int = N) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n


def best(ops: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Warm up, then interleave rounds and keep the best of each (least disturbed)."""
    for op in ops.values():
        per_call_ns(op, 300)
    results: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(ROUNDS):
        for name, op in ops.items():
            results[name].append(per_call_ns(op))
    return {name: min(values) for name, values in results.items()}


def postgres(url: str) -> dict[str, float]:
    import psycopg

    from ratekeeper import RateLimiter
    from ratekeeper.stores.postgres import PostgresStore

    raw = psycopg.connect(url, autocommit=True)
    # a temp table writes no WAL: use a real one for the floor of a write transaction
    floor = f"bench_floor_{uuid.uuid4().hex[:8]}"
    raw.execute(f"CREATE TABLE {floor} (id int PRIMARY KEY, n float8)")
    raw.execute(f"INSERT INTO {floor} VALUES (1, 0)")
    update = f"UPDATE {floor} SET n = n + 1 WHERE id = 1"
    store = PostgresStore.from_url(url, table_prefix=f"bench_{uuid.uuid4().hex[:8]}_")
    limiter = RateLimiter("1000000000/second", store=store)
    multi = RateLimiter("1000000000/second;2000000000/minute", store=store)
    figures = best(
        {
            "SELECT 1 (raw psycopg)": lambda: raw.execute("SELECT 1").fetchone(),
            "SELECT 1 (store.ping)": store.ping,
            "UPDATE 1 row (raw psycopg)": lambda: raw.execute(update),
            "hit, one limit": lambda: limiter.hit("bench"),
            "hit, two limits": lambda: multi.hit("bench2"),
        }
    )
    raw.execute(f"DROP TABLE {floor}")
    store.close()
    raw.close()
    return figures


def nats(url: str) -> dict[str, float]:
    import nats as nats_py

    from ratekeeper import RateLimiter
    from ratekeeper.stores.nats import NatsStore

    bucket = f"bench_{uuid.uuid4().hex[:8]}"
    store = NatsStore.from_url(url, bucket=bucket)
    limiter = RateLimiter("1000000000/second", store=store)
    multi = RateLimiter("1000000000/second;2000000000/minute", store=store)
    limiter.hit("bench")
    figures = best(
        {
            "KV get (same sync wrapper)": lambda: store.get_raw("bench"),
            "hit, one limit": lambda: limiter.hit("bench"),
            "hit, two limits": lambda: multi.hit("bench2"),
        }
    )

    async def raw_get() -> float:
        nc = await nats_py.connect(url)
        kv = await nc.jetstream().key_value(bucket)
        for _ in range(300):
            await kv.get(store_key)
        start = time.perf_counter_ns()
        for _ in range(N):
            await kv.get(store_key)
        took = (time.perf_counter_ns() - start) / N
        await nc.close()
        return took

    from ratekeeper.stores.nats import kv_key

    store_key = kv_key("bench")
    figures["KV get (raw nats-py, asyncio)"] = asyncio.run(raw_get())
    store.close()
    return figures


def show(name: str, figures: dict[str, float], trivial: str) -> None:
    print(f"\n{name}")
    base = figures[trivial]
    for label, ns in figures.items():
        print(f"  {label:32s} {ns / 1000:8.1f} us/call   x{ns / base:5.2f} of {trivial!r}")


def main() -> None:
    pg_url = os.environ.get("RATEKEEPER_POSTGRES_URL")
    nats_url = os.environ.get("RATEKEEPER_NATS_URL")
    if not pg_url or not nats_url:
        sys.exit("set RATEKEEPER_POSTGRES_URL and RATEKEEPER_NATS_URL (scripts/services start)")
    show("PostgreSQL (server time)", postgres(pg_url), "SELECT 1 (raw psycopg)")
    show("NATS JetStream KV (caller's clock)", nats(nats_url), "KV get (same sync wrapper)")


if __name__ == "__main__":
    main()
