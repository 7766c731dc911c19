"""Chains are exact under contention on real servers: 8 processes x 4 threads, each thread a user
of one of two tenants, through a 3-level `Chain` (global 200/hour GCRA > tenant 120/hour sliding
window > user 10/hour sliding log), admit exactly 200 in all, at most 120 per tenant and 10 per
user — on Redis (one script), PostgreSQL (one function call) and NATS (one multi-entry CAS loop).

Why exactly 200: every thread tries 15 times; a thread stops being admitted only when a level it
passes through is full, and the admissions cannot stall below 200 (two full tenants hold 240,
a full tenant and the other's 16 full users 280, 32 full users 320). The limits refill one unit
in 6 minutes at the fastest, far longer than a run.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from ratekeeper import Chain, RateLimiter
from ratekeeper.stores import Store

from .backends.nats import nats_url
from .backends.postgres import SCHEMA, postgres_url
from .backends.redis import env_url

pytestmark = pytest.mark.slow

PROCESSES, THREADS, HITS_PER_THREAD = 8, 4, 15
GLOBAL, TENANT, USER = 200, 120, 10
SECONDS = 10.0  # the most one run may take, start to end (exactness, not speed)


def make_store(kind: str, url: str, name: str) -> Store:
    """The store every process of one run shares: ``name`` is its key prefix, table prefix or
    bucket."""
    if kind == "redis":
        from ratekeeper.stores.redis import RedisStore

        return RedisStore.from_url(
            url, prefix=name, max_connections=THREADS, socket_timeout=5.0, pool_timeout=5.0
        )
    if kind == "postgres":
        from ratekeeper.stores.postgres import PostgresStore

        return PostgresStore.from_url(
            url, schema=SCHEMA, table_prefix=name, statement_timeout=5.0, pool_timeout=10.0
        )
    from ratekeeper.stores.nats import NatsStore

    return NatsStore.from_url(url, bucket=name, timeout=5.0)


def chain_on(store: Store) -> Chain:
    return Chain(
        RateLimiter(f"{GLOBAL}/hour", algorithm="gcra", store=store),
        RateLimiter(f"{TENANT}/hour", algorithm="sliding_window", store=store),
        RateLimiter(f"{USER}/hour", algorithm="sliding_log", store=store),
    )


def worker(kind: str, url: str, name: str, run: str, n: int, start_at: float) -> list[int]:
    """Process ``n``: 4 threads, each a user of tenant ``n % 2``; the admissions per thread."""
    store = make_store(kind, url, name)
    chain = chain_on(store)
    store.ping()  # connect before the start line
    counts = [0] * THREADS

    def hits(i: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        keys = (f"{run}:global", f"{run}:tenant:{n % 2}", f"{run}:user:{n}:{i}")
        counts[i] = sum(chain.hit(*keys).allowed for _ in range(HITS_PER_THREAD))

    threads = [threading.Thread(target=hits, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    return counts


def warm_up(_: int) -> None:
    time.sleep(0.3)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(warm_up, range(PROCESSES)))  # start the processes outside the timed runs
        yield ex


def url_of(kind: str) -> str:
    if kind == "redis":
        return env_url("RATEKEEPER_REDIS_URL")
    return postgres_url() if kind == "postgres" else nats_url()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("nats", marks=pytest.mark.nats),
    ],
)
def test_chain_admits_exactly_the_tightest_levels(pool: ProcessPoolExecutor, kind: str) -> None:
    url = url_of(kind)
    name = {"redis": "rkchain:", "postgres": "c", "nats": "rkchain_"}[kind] + uuid.uuid4().hex[:10]
    setup: Any = make_store(kind, url, name)
    if kind == "postgres":
        setup.migrate()
    chain_on(setup).peek("setup", "setup", "setup")  # the bucket, the tables: made once, here
    setup.close()
    run = uuid.uuid4().hex
    start_at = time.time() + 0.3
    futures = [pool.submit(worker, kind, url, name, run, n, start_at) for n in range(PROCESSES)]
    counts = [f.result(timeout=60) for f in futures]
    elapsed = time.time() - start_at
    per_tenant = [sum(sum(c) for n, c in enumerate(counts) if n % 2 == t) for t in (0, 1)]
    assert sum(per_tenant) == GLOBAL, counts
    assert max(per_tenant) <= TENANT, per_tenant
    assert max(max(c) for c in counts) <= USER, counts
    assert elapsed < SECONDS
