"""Leased local quota on real Redis: 8 processes x 4 threads (and 8 processes x 8 asyncio tasks)
hitting one key until denied admit exactly the limit, in a small number of store operations; a
store outage during a batch fetch follows ``on_store_error`` within the bound, and the refund
that travelled with the failed fetch is sent with the next one."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest

from ratekeeper import AsyncRateLimiter, RateLimiter, StoreUnavailable
from ratekeeper.stores.redis import AsyncRedisStore, RedisStore
from ratekeeper.testing import FakeClock
from tests.faultproxy import FaultProxy

from .backends.redis import PATIENT, env_url

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PROCESSES, THREADS, TASKS = 8, 4, 8
LIMIT = 1000
LIMITS = f"{LIMIT}/day"  # a bucket refills one unit in 86 s: counts stay exact during a test
BATCH = 100
BOUND = 1.0  # seconds: a decision with the store down (DESIGN.md, "A dead store answers fast")
ALGORITHMS = ["fixed_window", "token_bucket"]


def counted(store: Any) -> list[int]:
    """Count the store operations of a limiter with local quota (apply_checks and hit)."""
    calls = [0]

    def wrap(method: Any) -> Any:
        def counting(*args: Any) -> Any:
            calls[0] += 1
            return method(*args)

        async def acounting(*args: Any) -> Any:
            calls[0] += 1
            return await method(*args)

        return acounting if asyncio.iscoroutinefunction(method) else counting

    store.apply_checks, store.hit = wrap(store.apply_checks), wrap(store.hit)
    return calls


def thread_worker(url: str, prefix: str, algorithm: str, key: str, start_at: float) -> list[int]:
    """One process: THREADS threads, each hitting ``key`` until denied. [allowed, operations]"""
    store = RedisStore.from_url(url, prefix=prefix, max_connections=THREADS, **PATIENT)
    limiter = RateLimiter(LIMITS, algorithm=algorithm, store=store, local_quota=BATCH)
    store.ping()  # connect before the start line
    calls = counted(store)
    counts = [0] * THREADS

    def run(i: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        while limiter.hit(key):
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    limiter.close()
    store.close()
    return [sum(counts), calls[0]]


def task_worker(url: str, prefix: str, algorithm: str, key: str, start_at: float) -> list[int]:
    """One process: TASKS asyncio tasks, each hitting ``key`` until denied."""

    async def main() -> list[int]:
        store = AsyncRedisStore.from_url(url, prefix=prefix, **PATIENT)
        limiter = AsyncRateLimiter(LIMITS, algorithm=algorithm, store=store, local_quota=BATCH)
        await store.ping()
        calls = counted(store)
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def run() -> int:
            count = 0
            while await limiter.hit(key):
                count += 1
                await asyncio.sleep(0)  # let the other tasks in between local grants
            return count

        counts = await asyncio.gather(*(run() for _ in range(TASKS)))
        await limiter.close()
        await store.close()
        return [sum(counts), calls[0]]

    return asyncio.run(main())


def warm_up(_: int) -> None:
    time.sleep(0.3)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(warm_up, range(PROCESSES)))  # start every process outside the timed runs
        yield ex


def contend(
    pool: ProcessPoolExecutor,
    worker: Callable[[str, str, str, str, float], list[int]],
    algorithm: str,
) -> None:
    url = env_url("RATEKEEPER_REDIS_URL")
    to_boundary = 86400 - time.time() % 86400  # a fixed window restarts at midnight UTC
    if to_boundary < 15:
        time.sleep(to_boundary + 0.5)
    prefix, key = f"rktest:{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    start_at = time.time() + 0.3
    futures = [pool.submit(worker, url, prefix, algorithm, key, start_at) for _ in range(PROCESSES)]
    results = [f.result(timeout=60) for f in futures]
    assert sum(allowed for allowed, _ in results) == LIMIT, results
    # batches, not one round trip per request: 10 batches of 100, the tail, and the denials
    operations = sum(ops for _, ops in results)
    assert operations < LIMIT // 5, results
    store = RedisStore.from_url(url, prefix=prefix)
    after = RateLimiter(LIMITS, algorithm=algorithm, store=store).peek(key, cost=0)
    assert after.remaining == 0  # nothing stranded, nothing refunded twice
    store.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_processes_and_threads_with_local_quota_admit_exactly_the_limit(
    pool: ProcessPoolExecutor, algorithm: str
) -> None:
    contend(pool, thread_worker, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_processes_and_asyncio_tasks_with_local_quota_admit_exactly_the_limit(
    pool: ProcessPoolExecutor, algorithm: str
) -> None:
    contend(pool, task_worker, algorithm)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    target = urlsplit(env_url("RATEKEEPER_REDIS_URL"))
    assert target.hostname is not None and target.port is not None
    with FaultProxy(target.hostname, target.port) as fault_proxy:
        yield fault_proxy


@pytest.mark.parametrize("policy", ["allow", "deny", "raise"])
def test_a_store_outage_during_a_batch_fetch_follows_on_store_error(
    proxy: FaultProxy, policy: str
) -> None:
    clock = FakeClock()
    prefix = f"rktest:{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:{proxy.port}/0"
    store = RedisStore.from_url(url, prefix=prefix, time_source="client")
    limiter = RateLimiter(
        LIMITS,
        store=store,
        clock=clock,
        local_quota=BATCH,
        on_store_error=policy,  # type: ignore[arg-type]
    )
    assert limiter.hit("k")  # a batch of 100: 99 held
    clock.advance(2.0)  # the batch expires; its refund goes with the next fetch
    proxy.set_mode("reset")
    started = time.monotonic()
    if policy == "raise":
        with pytest.raises(StoreUnavailable):
            limiter.hit("k")
    else:
        decision = limiter.hit("k")
        assert decision.fallback and decision.allowed == (policy == "allow")
    assert time.monotonic() - started < BOUND
    assert limiter.metrics().store_errors == 1
    proxy.set_mode("pass")
    assert limiter.hit("k")  # the kept refund (99) and a new batch (100), in one operation
    assert limiter.peek("k", cost=0).remaining == LIMIT - 1 - BATCH
    limiter.close()  # the 99 unused of the new batch go back
    assert limiter.peek("k", cost=0).remaining == LIMIT - 2
    store.close()


def test_an_asyncio_store_outage_during_a_batch_fetch_follows_on_store_error(
    proxy: FaultProxy,
) -> None:
    async def main() -> None:
        clock = FakeClock()
        prefix = f"rktest:{uuid.uuid4().hex[:12]}"
        url = f"redis://127.0.0.1:{proxy.port}/0"
        store = AsyncRedisStore.from_url(url, prefix=prefix, time_source="client")
        limiter = AsyncRateLimiter(
            LIMITS, store=store, clock=clock, local_quota=BATCH, on_store_error="allow"
        )
        assert await limiter.hit("k")
        clock.advance(2.0)
        proxy.set_mode("reset")
        started = time.monotonic()
        decisions = await asyncio.gather(*(limiter.hit("k") for _ in range(TASKS)))
        assert time.monotonic() - started < BOUND
        assert all(d.allowed and d.fallback for d in decisions)
        proxy.set_mode("pass")
        assert await limiter.hit("k")
        await limiter.close()
        assert (await limiter.peek("k", cost=0)).remaining == LIMIT - 2
        await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("fault", ["blackhole", "reset"])
def test_many_threads_on_one_key_of_a_frozen_store_answer_within_the_bound(
    proxy: FaultProxy, fault: str
) -> None:
    """One fetch per key at a time: the callers waiting for it take its failure, not a fetch of
    their own one after the other (each would wait a whole deadline)."""
    prefix = f"rktest:{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:{proxy.port}/0"
    store = RedisStore.from_url(url, prefix=prefix)
    limiter = RateLimiter(LIMITS, store=store, local_quota=BATCH, on_store_error="allow")
    proxy.set_mode(fault)
    times: list[float] = []
    decisions: list[Any] = []
    gate = threading.Barrier(THREADS)

    def one() -> None:
        gate.wait()
        started = time.monotonic()
        decisions.append(limiter.hit("k"))
        times.append(time.monotonic() - started)

    threads = [threading.Thread(target=one) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(decisions) == THREADS and all(d.allowed and d.fallback for d in decisions)
    assert max(times) < BOUND, times
    proxy.set_mode("pass")
    limiter.close()
    store.close()


def test_many_tasks_on_one_key_of_a_frozen_store_answer_within_the_bound(
    proxy: FaultProxy,
) -> None:
    async def main() -> None:
        prefix = f"rktest:{uuid.uuid4().hex[:12]}"
        url = f"redis://127.0.0.1:{proxy.port}/0"
        store = AsyncRedisStore.from_url(url, prefix=prefix)
        limiter = AsyncRateLimiter(LIMITS, store=store, local_quota=BATCH, on_store_error="deny")
        proxy.set_mode("blackhole")

        async def one() -> float:
            started = time.monotonic()
            decision = await limiter.hit("k")
            assert not decision.allowed and decision.fallback
            return time.monotonic() - started

        times = await asyncio.gather(*(one() for _ in range(TASKS)))
        assert max(times) < BOUND, times
        proxy.set_mode("pass")
        await limiter.close()
        await store.close()

    asyncio.run(main())
