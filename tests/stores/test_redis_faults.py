"""Redis and NATS under faults, on private servers (never the shared ones): a frozen (SIGSTOP),
dead, blackholed or slow server gives every caller — many threads and asyncio tasks on one key
— a decision by policy within the bound; an error reply that means "cannot answer now" (BUSY) is
StoreUnavailable; a hit answered by the fallback is never charged when the server resumes; an
asyncio store works from a fresh event loop per call (``asyncio.run`` from blocking code).

The latencies are printed (``pytest -s``): they are the README's "When the store is down" rows.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ratekeeper import AsyncRateLimiter, RateLimiter, StoreUnavailable
from ratekeeper.stores.nats import AsyncNatsStore, NatsStore
from ratekeeper.stores.redis import AsyncRedisStore, RedisStore
from tests.faultproxy import FaultProxy

from .backends.redis import env_url
from .test_nats import PrivateServer
from .test_redis import PrivateRedis

BOUND = 1.0  # seconds: every decision with default settings, whatever the fault
THREADS, TASKS = 8, 40  # callers on one key at once
LIMIT = "1000/day"  # refills one unit in 86 s: counts stay exact for the length of a test
Latencies = list[tuple[str, float, bool]]  # (sync|async, seconds, fallback)


def storm(sync_limiter: RateLimiter, async_limiter: AsyncRateLimiter, key: str) -> Latencies:
    """THREADS threads and TASKS asyncio tasks (in a fresh ``asyncio.run``) hit ``key`` at once."""
    out: Latencies = []
    lock = threading.Lock()
    go = threading.Barrier(THREADS + 1)

    def thread() -> None:
        go.wait()
        start = time.monotonic()
        d = sync_limiter.hit(key)
        with lock:
            out.append(("sync", time.monotonic() - start, d.fallback))

    async def task() -> None:
        start = time.monotonic()
        d = await async_limiter.hit(key)
        out.append(("async", time.monotonic() - start, d.fallback))

    async def tasks() -> None:
        await asyncio.gather(*(task() for _ in range(TASKS)))

    threads = [threading.Thread(target=thread) for _ in range(THREADS)]
    for t in threads:
        t.start()
    go.wait()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    assert len(out) == THREADS + TASKS
    return out


def report(what: str, latencies: Latencies) -> None:
    for kind in ("sync", "async"):
        xs = [s for k, s, _ in latencies if k == kind]
        print(
            f"\n{what} {kind}: {len(xs)} callers, median {statistics.median(xs):.3f}s, "
            f"worst {max(xs):.3f}s"
        )


def assert_bounded(latencies: Latencies, fallback: bool | None = True) -> None:
    worst = max(s for _, s, _ in latencies)
    assert worst < BOUND, f"a decision took {worst:.3f}s"
    if fallback is not None:
        assert all(f == fallback for _, _, f in latencies), latencies


def allowed(limiter: RateLimiter, key: str) -> int:
    """What a peek says is left on ``key`` (after the hypothetical hit: one less than is left)."""
    d = limiter.peek(key)
    assert not d.fallback
    return d.remaining


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def redis_pair(url: str) -> tuple[RedisStore, AsyncRedisStore, RateLimiter, AsyncRateLimiter]:
    """Stores with the library's defaults (the fault suite measures the default bound)."""
    sync, aio = RedisStore.from_url(url), AsyncRedisStore.from_url(url)
    return (
        sync,
        aio,
        RateLimiter(LIMIT, store=sync, on_store_error="allow"),
        AsyncRateLimiter(LIMIT, store=aio, on_store_error="allow"),
    )


@pytest.mark.redis
@pytest.mark.parametrize("fault", ["frozen", "dead", "blackhole", "slow"])
def test_redis_every_caller_answered_within_the_bound(
    private_redis: PrivateRedis, fault: str
) -> None:
    with FaultProxy("127.0.0.1", private_redis.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        sync, _, limiter, alimiter = redis_pair(url)
        key = "k"
        healthy = storm(limiter, alimiter, key)  # connections are open and scripts loaded
        assert_bounded(healthy, fallback=False)
        charged = len(healthy)
        if fault == "frozen":
            private_redis.freeze()
        elif fault == "dead":
            private_redis.stop()
        elif fault == "slow":
            proxy.set_mode("latency", latency=0.4)  # 0.8 s per round trip: past the deadline
        else:
            proxy.set_mode(fault)  # type: ignore[arg-type]
        faulty = storm(limiter, alimiter, key)
        report(f"redis {fault}", faulty)
        assert_bounded(faulty)
        if fault == "dead":
            private_redis.start()
        elif fault == "frozen":
            private_redis.thaw()  # the commands sent meanwhile run now: they must change nothing
        proxy.set_mode("pass")
        redis.Redis(port=private_redis.port).ping()  # the server has read what it held
        left = allowed(limiter, key)
        if fault == "slow":
            # The one case the deadline cannot cover: a command that reached the server in time
            # but whose reply came too late (here 0.4 s each way) was counted, unseen.
            assert 1000 - charged - 1 - len(faulty) <= left <= 1000 - charged - 1
        elif fault != "dead":  # (a restarted server has no state)
            assert left == 1000 - charged - 1
        assert not limiter.hit(key).fallback  # decisions succeed again, no restart needed
        sync.close()


@pytest.mark.redis
def test_redis_hits_answered_by_the_fallback_are_not_charged_later(
    private_redis: PrivateRedis,
) -> None:
    """A hit sent to a frozen server and answered by the fallback must not be applied when the
    server resumes (remaining was 299 -> 297 before the scripts carried a deadline)."""
    sync, aio, limiter, _ = redis_pair(private_redis.url)
    assert limiter.hit("k").remaining == 999
    sync_leases = RateLimiter(LIMIT, store=sync, max_concurrent=1, on_store_error="deny")
    private_redis.freeze()
    d = limiter.hit("k")
    assert d.fallback
    with pytest.raises(StoreUnavailable):
        sync.acquire_lease("lease", "holder", 1, 60.0, 0.0)
    private_redis.thaw()
    redis.Redis(port=private_redis.port).ping()
    assert allowed(limiter, "k") == 998  # one hit charged (a peek counts the next one)
    with sync_leases.acquire("lease", timeout=0):  # the refused lease holds no slot
        pass

    async def late_async() -> None:
        alimiter = AsyncRateLimiter(LIMIT, store=aio, on_store_error="allow")
        assert not (await alimiter.hit("a")).fallback
        private_redis.freeze()
        results = await asyncio.gather(*(alimiter.hit("a") for _ in range(20)))
        assert all(r.fallback for r in results)
        private_redis.thaw()
        await aio.close()

    asyncio.run(late_async())
    redis.Redis(port=private_redis.port).ping()
    assert allowed(limiter, "a") == 998
    sync.close()


@pytest.mark.redis
def test_redis_busy_running_a_script_is_store_unavailable(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    server.extra = ("--busy-reply-threshold", "50")  # ms before others get BUSY
    server.start()
    blocker = redis.Redis(port=server.port)

    def run_forever() -> None:  # until SCRIPT KILL
        with pytest.raises(redis.ResponseError):
            blocker.eval("while true do end", 0)

    stuck = threading.Thread(target=run_forever)
    try:
        sync, aio, limiter, alimiter = redis_pair(server.url)
        assert not limiter.hit("k").fallback
        stuck.start()
        probe = redis.Redis(port=server.port)
        deadline = time.monotonic() + 5
        while True:  # until the script has run past the threshold
            try:
                probe.ping()
            except redis.ResponseError as exc:
                assert str(exc).startswith("BUSY")
                break
            assert time.monotonic() < deadline
        strict = RateLimiter(LIMIT, store=sync)
        with pytest.raises(StoreUnavailable, match="BUSY"):
            strict.hit("k")
        d = RateLimiter(LIMIT, store=sync, on_store_error="deny").hit("k")
        assert d.fallback and not d.allowed

        async def busy_async() -> None:
            with pytest.raises(StoreUnavailable, match="BUSY"):
                await AsyncRateLimiter(LIMIT, store=aio).hit("k")
            results = await asyncio.gather(*(alimiter.hit("k") for _ in range(10)))
            assert all(r.fallback and r.allowed for r in results)

        asyncio.run(busy_async())
        probe.script_kill()
        stuck.join()
        assert not limiter.hit("k").fallback
        assert allowed(limiter, "k") == 997  # two hits charged, none during BUSY
        sync.close()
    finally:
        server.stop()


def count_from_fresh_loops(make: Callable[[], Any]) -> list[tuple[bool, bool]]:
    """An asyncio store driven by ``asyncio.run`` from blocking code, a fresh loop per call (as
    a WSGI app does): (allowed, fallback) of 10 hits on a 5/minute limit."""
    store = make()
    limiter = AsyncRateLimiter("5/minute", store=store, on_store_error="allow")
    key = uuid.uuid4().hex
    results = []
    for _ in range(10):
        d = asyncio.run(limiter.hit(key))
        results.append((d.allowed, d.fallback))

    async def close() -> None:
        await store.close()

    asyncio.run(close())
    return results


@pytest.mark.redis
def test_async_redis_store_from_a_fresh_event_loop_per_call() -> None:
    results = count_from_fresh_loops(
        lambda: AsyncRedisStore.from_url(env_url("RATEKEEPER_REDIS_URL"))
    )
    assert results == [(True, False)] * 5 + [(False, False)] * 5


# --------------------------------------------------------------------------- NATS


@pytest.fixture
def private_nats() -> Iterator[PrivateServer]:
    with tempfile.TemporaryDirectory(prefix="rk-nats-") as folder:
        server = PrivateServer(Path(folder))
        server.start()
        try:
            yield server
        finally:
            if server.proc is not None:
                server.proc.send_signal(18)  # SIGCONT, in case the test failed while frozen
            server.stop()


@pytest.mark.nats
@pytest.mark.parametrize("fault", ["frozen", "dead", "blackhole", "slow"])
def test_nats_every_caller_answered_within_the_bound(
    private_nats: PrivateServer, fault: str
) -> None:
    with FaultProxy("127.0.0.1", private_nats.port) as proxy:
        url = f"nats://127.0.0.1:{proxy.port}"
        sync = NatsStore.from_url(url, bucket="faults")
        aio = AsyncNatsStore.from_url(url, bucket="faults")
        limiter = RateLimiter(LIMIT, store=sync, on_store_error="allow")
        alimiter = AsyncRateLimiter(LIMIT, store=aio, on_store_error="allow")
        healthy = storm(limiter, alimiter, "k")
        assert max(s for _, s, _ in healthy) < BOUND
        assert not any(f for _, _, f in healthy)
        assert allowed(limiter, "k") == 1000 - len(healthy) - 1
        assert proxy.port
        if fault == "frozen":
            assert private_nats.proc is not None
            private_nats.proc.send_signal(19)  # SIGSTOP
        elif fault == "dead":
            private_nats.stop()
        elif fault == "slow":
            proxy.set_mode("latency", latency=0.4)
        else:
            proxy.set_mode("blackhole")
        faulty = storm(limiter, alimiter, "k")
        report(f"nats {fault}", faulty)
        assert_bounded(faulty)
        if fault == "frozen":
            assert private_nats.proc is not None
            private_nats.proc.send_signal(18)  # SIGCONT
        elif fault == "dead":
            private_nats.start()
        proxy.set_mode("pass")
        deadline = time.monotonic() + 10
        while limiter.hit("k").fallback:  # the client reconnects by itself
            assert time.monotonic() < deadline, "no recovery"
        sync.close()


@pytest.mark.nats
def test_async_nats_store_from_a_fresh_event_loop_per_call() -> None:
    url = env_url("RATEKEEPER_NATS_URL")
    results = count_from_fresh_loops(lambda: AsyncNatsStore.from_url(url, bucket="freshloops"))
    assert results == [(True, False)] * 5 + [(False, False)] * 5
