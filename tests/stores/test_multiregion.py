"""Multi-region stores on three private redis-servers as regions, the links between regions
through FaultProxy (cross-region latency, a region that goes away and returns): decisions never
wait on another region, every region counts every region's admissions once replicated, the
over-admission bound, backlogs, and the asyncio twin."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from ratekeeper import AsyncRateLimiter, RateLimiter
from ratekeeper.errors import ConfigError
from ratekeeper.stores import multiregion
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.stores.multiregion import AsyncMultiRegionStore, MultiRegionStore
from ratekeeper.stores.redis import AsyncRedisStore, RedisStore
from ratekeeper.testing import FakeClock
from tests.faultproxy import FaultProxy

from .test_redis import PrivateRedis

pytestmark = pytest.mark.redis

REGIONS = 3
CROSS_LATENCY = 0.2  # seconds per direction between regions: far above a local round trip
LOCAL_BOUND = 0.05  # seconds: a decision's worst latency with a healthy local store
FLUSH_BOUND = 10.0  # seconds for every charge to reach every remote
LIMIT = 60  # per day: no refill during a test


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PrivateRedis]]:
    started = []
    try:
        for i in range(REGIONS):
            server = PrivateRedis(tmp_path_factory.mktemp(f"region{i}"))
            server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def proxies(servers: list[PrivateRedis]) -> Iterator[list[FaultProxy]]:
    """One proxy in front of each region: how the other regions reach it."""
    made = [FaultProxy("127.0.0.1", s.port) for s in servers]
    yield made
    for proxy in made:
        proxy.close()


# A remote store works in the background: timeouts above a cross-region round trip, connection
# setup included (the module docstring's advice).
REMOTE = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "pool_timeout": 5.0}


def _store(port: int, prefix: str, remote: bool = False) -> RedisStore:
    url = f"redis://127.0.0.1:{port}/0"
    options = REMOTE if remote else {}
    return RedisStore.from_url(url, prefix=prefix, time_source="client", **options)


def _astore(port: int, prefix: str, remote: bool = False) -> AsyncRedisStore:
    url = f"redis://127.0.0.1:{port}/0"
    options = REMOTE if remote else {}
    return AsyncRedisStore.from_url(url, prefix=prefix, time_source="client", **options)


def regions(
    servers: list[PrivateRedis], proxies: list[FaultProxy], **options: float
) -> list[MultiRegionStore]:
    """One MultiRegionStore per region: its own server direct, the others through their proxy."""
    prefix = f"rkmr:{uuid.uuid4().hex[:8]}"
    made = []
    for i, server in enumerate(servers):
        local = _store(server.port, prefix)
        remotes = [_store(proxies[j].port, prefix, True) for j in range(len(servers)) if j != i]
        made.append(MultiRegionStore(local, remotes, **options))
    return made


def test_options_are_checked(servers: list[PrivateRedis]) -> None:
    local = RedisStore.from_url(servers[0].url)
    with pytest.raises(ConfigError):
        MultiRegionStore(local, [])
    with pytest.raises(ConfigError):
        MultiRegionStore(local, [local], retry_interval=0)
    local.close()


def test_every_region_counts_every_regions_admissions(
    servers: list[PrivateRedis], proxies: list[FaultProxy]
) -> None:
    stores = regions(servers, proxies)
    limiters = [RateLimiter(f"{LIMIT}/day", store=s) for s in stores]
    for i, limiter in enumerate(limiters):
        assert all(limiter.hit("k").allowed for _ in range(10 * (i + 1)))  # 10, 20, 30
    for store in stores:
        assert store.flush(FLUSH_BOUND)
    for limiter in limiters:
        assert limiter.peek("k", cost=0).remaining == LIMIT - 60  # every region's 60
    assert [s.replication()[0].applied for s in stores] == [10, 20, 30]
    limiters[0].reset("k")  # a reset is replicated too
    for store in stores:
        assert store.flush(FLUSH_BOUND)
    assert all(limiter.peek("k", cost=0).remaining == LIMIT for limiter in limiters)
    for store in stores:
        store.close()


def test_decisions_never_wait_on_a_slow_region(
    servers: list[PrivateRedis], proxies: list[FaultProxy]
) -> None:
    for proxy in proxies:
        proxy.set_mode("latency", latency=CROSS_LATENCY)
    stores = regions(servers, proxies)
    limiter = RateLimiter(f"{LIMIT}/day", store=stores[0])
    worst = 0.0
    for _ in range(40):
        t0 = time.monotonic()
        assert limiter.hit("k").allowed
        worst = max(worst, time.monotonic() - t0)
    assert worst < LOCAL_BOUND, f"a local decision took {worst:.3f} s"
    assert stores[0].replication()[0].pending > 0  # the charges are still on their way
    assert stores[0].flush(FLUSH_BOUND)
    remote = RateLimiter(f"{LIMIT}/day", store=stores[1])
    assert remote.peek("k", cost=0).remaining == LIMIT - 40
    for store in stores:
        store.close()


def test_a_region_that_goes_away_and_returns_catches_up(
    servers: list[PrivateRedis], proxies: list[FaultProxy]
) -> None:
    stores = regions(servers, proxies, retry_interval=0.05)
    here = RateLimiter(f"{LIMIT}/day", store=stores[0])
    proxies[1].set_mode("reset")  # region 1 unreachable from everywhere
    t0 = time.monotonic()
    assert all(here.hit("k").allowed for _ in range(15))
    assert time.monotonic() - t0 < 15 * LOCAL_BOUND
    assert stores[0].flush(0.5) is False  # region 1 cannot be reached
    status = stores[0].replication()
    assert status[0].pending > 0 and status[0].failures > 0  # region 1: a backlog
    assert status[1].pending == 0 and status[1].applied == 15  # region 2: up to date
    proxies[1].set_mode("pass")  # region 1 returns
    assert stores[0].flush(FLUSH_BOUND)
    there = RateLimiter(f"{LIMIT}/day", store=stores[1])
    assert there.peek("k", cost=0).remaining == LIMIT - 15
    for store in stores:
        store.close()


def test_over_admission_is_what_the_others_admit_during_the_lag(
    servers: list[PrivateRedis], proxies: list[FaultProxy]
) -> None:
    """No lag (each region waits for its charges): exactly the limit, globally. An endless lag
    (the links blackholed): each region admits the whole limit, the bound's worst case."""
    stores = regions(servers, proxies)
    limiters = [RateLimiter(f"{LIMIT}/day", store=s) for s in stores]
    admitted = 0
    for turn in range(2 * LIMIT):
        i = turn % REGIONS
        admitted += limiters[i].hit("synced").allowed
        assert stores[i].flush(FLUSH_BOUND)
    assert admitted == LIMIT

    for proxy in proxies:
        proxy.set_mode("blackhole")
    admitted = sum(limiters[i].hit("cut").allowed for _ in range(2 * LIMIT) for i in range(3))
    assert admitted == REGIONS * LIMIT
    for proxy in proxies:
        proxy.set_mode("pass")
    for store in stores:
        store.close()


def test_stale_charges_and_a_full_backlog_are_dropped(
    servers: list[PrivateRedis], proxies: list[FaultProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = regions(servers, proxies, max_backlog=5, retry_interval=0.05)
    for proxy in proxies:
        proxy.set_mode("reset")
    limiter = RateLimiter("100/second", store=stores[0])
    assert all(limiter.hit(f"k{i}").allowed for i in range(8))  # 8 keys: 8 charges
    assert stores[0].replication()[0].dropped >= 2  # a backlog of 5 (+1 in flight) keeps the newest
    # 2 s later, past the 1 s period: the charges have no effect left
    monkeypatch.setattr(multiregion, "_clock", lambda: time.monotonic() + 2.0)
    for proxy in proxies:
        proxy.set_mode("pass")
    assert stores[0].flush(FLUSH_BOUND)
    status = stores[0].replication()
    # every charge past its period is dropped (but one that was in flight across the change)
    assert all(s.dropped >= 7 and s.dropped + s.applied == 8 for s in status), status
    for store in stores:
        store.close()


def test_threads_in_every_region_at_once(
    servers: list[PrivateRedis], proxies: list[FaultProxy]
) -> None:
    for proxy in proxies:
        proxy.set_mode("latency", latency=0.02)
    stores = regions(servers, proxies)
    limiters = [RateLimiter(f"{LIMIT}/day", store=s) for s in stores]
    counts: list[int] = []

    def region(limiter: RateLimiter) -> None:
        counts.append(sum(limiter.hit("hot").allowed for _ in range(60)))

    threads = [threading.Thread(target=region, args=(lim,)) for lim in limiters for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert LIMIT <= sum(counts) <= REGIONS * LIMIT  # never under; over only by the lag
    for store in stores:
        assert store.flush(FLUSH_BOUND)
    for store in stores:
        store.close()


async def test_async_regions(servers: list[PrivateRedis], proxies: list[FaultProxy]) -> None:
    proxies[1].set_mode("latency", latency=CROSS_LATENCY)
    prefix = f"rkmr:{uuid.uuid4().hex[:8]}"
    store = AsyncMultiRegionStore(
        _astore(servers[0].port, prefix), [_astore(proxies[1].port, prefix, True)]
    )
    limiter = AsyncRateLimiter(f"{LIMIT}/day", store=store)
    t0 = time.monotonic()
    decisions = await asyncio.gather(*(limiter.hit("k") for _ in range(30)))
    assert all(d.allowed for d in decisions)
    assert time.monotonic() - t0 < CROSS_LATENCY  # not one decision waited for region 1
    assert await store.flush(FLUSH_BOUND)
    there = _store(servers[1].port, prefix)
    assert RateLimiter(f"{LIMIT}/day", store=there).peek("k", cost=0).remaining == LIMIT - 30
    there.close()
    await store.close()


def test_the_benchmark_runs(servers: list[PrivateRedis]) -> None:
    from benchmarks import multiregion as bench

    rows = bench.run(seconds=1.0, latency=0.02, rate=50, ports=[s.port for s in servers])
    assert {row["load"] for row in rows} == {"steady", "bursty"}
    assert all(row["admitted"] >= row["ideal"] * 0.9 for row in rows)


def test_charges_are_unconditional_on_a_store_that_can_charge() -> None:
    """On a CheckStore (memory here) a charge goes into debt rather than being refused, so a
    region whose own traffic used up its budget still counts the other regions' admissions."""
    clock = FakeClock(1000.0)
    here, there = MemoryStore(), MemoryStore()
    region_a = MultiRegionStore(here, [there])
    region_b = MultiRegionStore(there, [here])
    a = RateLimiter("10/minute", store=region_a, clock=clock)
    b = RateLimiter("10/minute", store=region_b, clock=clock)
    assert all(b.hit("k").allowed for _ in range(10))  # b uses the whole budget...
    assert all(a.hit("k").allowed for _ in range(5))  # ...a, not told yet, admits 5 (the lag)
    assert region_a.flush(FLUSH_BOUND) and region_b.flush(FLUSH_BOUND)
    assert [s.refused for s in (*region_a.replication(), *region_b.replication())] == [0, 0]
    # both regions now count 15 of 10: 5 in debt, waited off before anyone is admitted again
    clock.advance(30)  # 5 units refilled: the debt is paid, nothing more
    assert not a.hit("k").allowed and not b.hit("k").allowed
    clock.advance(6.5)
    assert a.hit("k").allowed  # one unit...
    assert region_a.flush(FLUSH_BOUND)
    assert not b.hit("k").allowed  # ...counted in both regions
    region_a.close()
    region_b.close()
