"""Quick Redis figures: ns per sync ``hit`` (one key) against ns per raw redis-py ``EVALSHA`` of
``return 1`` in the same run, and asyncio hits/s with 50 concurrent tasks.

    python benchmarks/redis_quick.py [redis://127.0.0.1:6379/0]   (default: $RATEKEEPER_REDIS_URL)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import redis
import redis.asyncio

from ratekeeper import AsyncRateLimiter, RateLimiter
from ratekeeper.stores.redis import AsyncRedisStore, RedisStore

N = 20_000
ROUNDS = 5
TASKS = 50
SECONDS = 2.0


def per_call_ns(fn: object, n: int = N) -> float:
    call = fn  # type: ignore[assignment]
    start = time.perf_counter_ns()
    for _ in range(n):
        call()  # type: ignore[operator]
    return (time.perf_counter_ns() - start) / n


def sync_figures(url: str) -> tuple[float, float]:
    raw = redis.Redis.from_url(url)
    sha = raw.script_load("return 1")
    store = RedisStore.from_url(url, prefix=f"rkbench:{uuid.uuid4().hex[:8]}")
    limiter = RateLimiter("1000000000/second", store=store)
    evalsha = raw.evalsha
    hit = limiter.hit
    per_call_ns(lambda: evalsha(sha, 0), 2000)
    per_call_ns(lambda: hit("bench"), 2000)
    raw_ns, hit_ns = [], []
    for _ in range(ROUNDS):  # interleaved, best of each
        raw_ns.append(per_call_ns(lambda: evalsha(sha, 0)))
        hit_ns.append(per_call_ns(lambda: hit("bench")))
    store.close()
    raw.close()
    return min(raw_ns), min(hit_ns)


async def async_figures(url: str) -> tuple[float, float]:
    raw = redis.asyncio.Redis.from_url(url)
    sha = await raw.script_load("return 1")
    store = AsyncRedisStore.from_url(url, prefix=f"rkbench:{uuid.uuid4().hex[:8]}")
    limiter = AsyncRateLimiter("1000000000/second", store=store)

    async def rate(op: object) -> float:
        count = 0
        stop = time.perf_counter() + SECONDS

        async def task() -> None:
            nonlocal count
            while time.perf_counter() < stop:
                await op()  # type: ignore[operator]
                count += 1

        start = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(TASKS)))
        return count / (time.perf_counter() - start)

    raw_rate = await rate(lambda: raw.evalsha(sha, 0))
    hit_rate = await rate(lambda: limiter.hit("bench"))
    await store.close()
    await raw.aclose()
    return raw_rate, hit_rate


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RATEKEEPER_REDIS_URL", "")
    if not url:
        sys.exit("usage: redis_quick.py REDIS_URL (or set RATEKEEPER_REDIS_URL)")
    raw_ns, hit_ns = sync_figures(url)
    print(f"sync : raw EVALSHA 'return 1' {raw_ns:8.0f} ns/op")
    print(f"sync : ratekeeper hit         {hit_ns:8.0f} ns/op   ratio {hit_ns / raw_ns:.2f}x")
    raw_rate, hit_rate = asyncio.run(async_figures(url))
    print(f"async: raw EVALSHA, {TASKS} tasks  {raw_rate:10.0f} ops/s")
    ratio = hit_rate / raw_rate
    print(f"async: ratekeeper hit, {TASKS} tasks {hit_rate:9.0f} hits/s  ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
