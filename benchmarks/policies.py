"""What the policies cost per decision: a 3-level chain against three separate hits, a priority
class, a reservation; and the single-limit hit they must not slow down.

Cases, interleaved round by round (the median of the rounds is reported, with the ratio to one
plain hit on the same store):

    hit                 RateLimiter.hit, one limit (the hot path)
    3 separate hits     three limiters hit one after the other (not atomic)
    chain of 3          Chain(global, tenant, user).hit: one atomic apply_checks
    priority class      hit(key, priority="batch"): apply_checks with a share
    reserve + commit    reserve an estimate, commit below it (two store operations)

Stores: memory always; Redis (standalone or Cluster), PostgreSQL and NATS when their URLs are
given. On a Cluster the chain's keys are in different hash slots: one script per slot.

    PYTHONPATH=.:src .venv/bin/python benchmarks/policies.py [--smoke]
        [--redis-url URL] [--redis-cluster-url URL] [--postgres-url URL] [--nats-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.measure import key_sequence, ns_per_decision
from ratekeeper import Chain, RateLimiter
from ratekeeper.stores.memory import MemoryStore

LIMITS = ("1000000/second", "100000/second", "10000/second")  # every request admitted


def cases(store: Any) -> dict[str, Callable[[str], Any]]:
    levels = [RateLimiter(limits, store=store) for limits in LIMITS]
    chain = Chain(*levels)
    classed = RateLimiter(LIMITS[0], store=store, priorities={"batch": 0.9})
    first, second, third = levels

    def separate(key: str) -> None:
        first.hit("global")
        second.hit("tenant")
        third.hit(key)

    def reserve(key: str) -> None:
        first.reserve(key, cost=3).commit(1)

    return {
        "hit": first.hit,
        "3 separate hits": separate,
        "chain of 3": lambda key: chain.hit("global", "tenant", key),
        "priority class": lambda key: classed.hit(key, priority="batch"),
        "reserve + commit": reserve,
    }


@contextmanager
def stores(args: argparse.Namespace) -> Iterator[list[tuple[str, Any]]]:
    made: list[tuple[str, Any]] = [("memory", MemoryStore())]
    for name, url in (("redis", args.redis_url), ("redis cluster", args.redis_cluster_url)):
        if url:
            from ratekeeper.stores.redis import RedisStore

            made.append((name, RedisStore.from_url(url, prefix=f"rkbench:{uuid.uuid4().hex}")))
    if args.postgres_url:
        from ratekeeper.stores.postgres import PostgresStore

        made.append(("postgres", PostgresStore.from_url(args.postgres_url)))
    if args.nats_url:
        from ratekeeper.stores.nats import NatsStore

        made.append(("nats", NatsStore.from_url(args.nats_url, bucket="rkbench")))
    try:
        yield made
    finally:
        for _, store in made:
            store.close()


def measure(store: Any, n: int, rounds: int) -> dict[str, float]:
    table = cases(store)
    samples: dict[str, list[float]] = {name: [] for name in table}
    prefix = uuid.uuid4().hex[:8]
    for hit in table.values():  # warm up: connections, schema, caches
        hit(f"{prefix}:warm")
    for r in range(rounds):
        for name, hit in table.items():
            seq = key_sequence(100, n, prefix=f"{prefix}:{r}")
            samples[name].append(ns_per_decision(hit, seq))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: only check it runs")
    parser.add_argument("--redis-url")
    parser.add_argument("--redis-cluster-url")
    parser.add_argument("--postgres-url")
    parser.add_argument("--nats-url")
    args = parser.parse_args()
    started = time.perf_counter()
    with stores(args) as made:
        for name, store in made:
            local = name == "memory"
            n = 5 if args.smoke else (20_000 if local else 300)
            rounds = 1 if args.smoke else 7
            result = measure(store, n, rounds)
            base = result["hit"]
            print(f"{name}:")
            for case, ns in result.items():
                print(f"  {case:18} {ns / 1000:9.2f} us   x{ns / base:5.2f}")
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
