"""Exactness under contention on real Redis: 8 processes x 4 threads hitting one key of
"1000/hour" admit exactly 1000, for every algorithm and for several limits at once."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest

from ratekeeper import RateLimiter
from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.stores.redis import RedisStore

from .backends.redis import PATIENT, env_url

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PROCESSES, THREADS, HITS_PER_THREAD = 8, 4, 45  # 1440 attempts for 1000 places
CASES = [(algorithm, "1000/hour") for algorithm in ALGORITHMS] + [
    ("token_bucket", "1000/hour;1200/day;1000/minute"),
    ("sliding_window", "1000/hour;5000/day"),
]


def worker(url: str, prefix: str, limits: str, algorithm: str, key: str, start_at: float) -> int:
    """One process: 4 threads hitting one key, all starting at ``start_at``."""
    store = RedisStore.from_url(url, prefix=prefix, max_connections=THREADS, **PATIENT)
    limiter = RateLimiter(limits, algorithm=algorithm, store=store)
    store.ping()  # connect before the start line
    counts = [0] * THREADS

    def run(i: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        counts[i] = sum(limiter.hit(key).allowed for _ in range(HITS_PER_THREAD))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    return sum(counts)


def warm_up(_: int) -> None:
    time.sleep(0.3)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as ex:
        # start every process and import this module there now, outside the timed runs
        list(ex.map(warm_up, range(PROCESSES)))
        yield ex


@pytest.mark.parametrize(("algorithm", "limits"), CASES)
def test_processes_and_threads_admit_exactly_the_limit(
    pool: ProcessPoolExecutor, algorithm: str, limits: str
) -> None:
    url = env_url("RATEKEEPER_REDIS_URL")
    # A fixed window restarts at the top of the hour: don't straddle it.
    to_boundary = 3600 - time.time() % 3600
    if to_boundary < 15:
        time.sleep(to_boundary + 0.5)
    prefix, key = f"rktest:{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    start_at = time.time() + 0.3
    futures = [
        pool.submit(worker, url, prefix, limits, algorithm, key, start_at) for _ in range(PROCESSES)
    ]
    admitted = [f.result(timeout=60) for f in futures]
    # well under the 3.6 s in which "1000/hour" frees one more unit
    assert time.time() - start_at < 3.0
    assert sum(admitted) == 1000, admitted
    store = RedisStore.from_url(url, prefix=prefix)
    after = RateLimiter(limits, algorithm=algorithm, store=store).peek(key)
    assert not after.allowed and after.remaining == 0
    store.close()
