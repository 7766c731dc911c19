import asyncio
import logging
import threading
import time

import pytest

from ratekeeper import (
    AsyncRateLimiter,
    ConfigError,
    Decision,
    Limit,
    RateLimiter,
    RateLimitExceeded,
    RateLimitTimeout,
    StoreUnavailable,
)
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore
from ratekeeper.testing import FakeClock


def test_one_line():
    assert RateLimiter("100/minute").hit("user:42").allowed


def test_accepts_limit_objects_and_sequences():
    a = RateLimiter(Limit(2, per=1))
    b = RateLimiter([Limit(2, per=1), Limit(5, per=60)])
    assert a.limits == (Limit(2, per=1),)
    assert len(b.limits) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limits": "100/fortnight"}, "fortnight"),
        ({"limits": []}, "[]"),
        ({"limits": 5}, "5"),
        ({"limits": "1/s", "algorithm": "bogus"}, "bogus"),
        ({"limits": "1/s", "store": "mongo+weird://x"}, "mongo+weird://x"),
        ({"limits": "1/s", "store": 42}, "42"),
        ({"limits": "1/s", "max_concurrent": 0}, "0"),
        ({"limits": "1/s", "max_concurrent": 1.5}, "1.5"),
        ({"limits": "1/s", "lease_ttl": -1}, "-1"),
        ({"limits": "1/s", "lease_ttl": 1e300}, "1e+300"),
        ({"limits": "1/s", "lease_ttl": 1e-9}, "1e-09"),
        ({"limits": "1/s", "lease_ttl": float("nan")}, "nan"),
        ({"limits": "1/s", "lease_ttl": True}, "True"),
        ({"limits": "1/s", "on_store_error": "ignore"}, "ignore"),
        ({"limits": "1/s", "clock": "now"}, "now"),
    ],
)
def test_bad_configuration_raises_at_construction(kwargs, message):
    with pytest.raises(ConfigError) as info:
        RateLimiter(**kwargs)
    assert message in str(info.value)


def test_async_store_rejected_by_sync_limiter_and_vice_versa():
    with pytest.raises(ConfigError):
        RateLimiter("1/s", store=AsyncMemoryStore())  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        AsyncRateLimiter("1/s", store=object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "cost", "message"),
    [
        (42, 1, "key must be a str"),
        (None, 1, "key must be a str"),
        (b"k", 1, "key must be a str"),
        ("k", -1, "cost must be a finite number >= 0, got -1"),
        ("k", float("nan"), "nan"),
        ("k", float("inf"), "inf"),
        ("k", "1", "cost must be a number"),
        ("k", True, "cost must be a number"),
    ],
)
def test_bad_call_arguments(key, cost, message):
    limiter = RateLimiter("5/second")
    for call in (limiter.hit, limiter.peek, limiter.enforce, limiter.acquire):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            call(key, cost)


def test_other_real_costs_are_accepted():
    from decimal import Decimal
    from fractions import Fraction

    limiter = RateLimiter("2/second", clock=FakeClock())
    assert limiter.hit("k", Fraction(1, 2)).allowed
    assert limiter.hit("k", Decimal("1.5")).allowed
    assert not limiter.hit("k", 1).allowed


def test_peek_is_what_hit_would_say():
    clock = FakeClock()
    limiter = RateLimiter("3/second", clock=clock)
    limiter.hit("k")
    p = limiter.peek("k", cost=2)
    assert p == limiter.peek("k", cost=2)
    assert p == limiter.hit("k", cost=2)
    assert not limiter.peek("k").allowed


def test_enforce_raises_with_decision():
    limiter = RateLimiter("1/minute", clock=FakeClock())
    assert limiter.enforce("k").allowed
    with pytest.raises(RateLimitExceeded) as info:
        limiter.enforce("k")
    assert not info.value.decision.allowed
    assert info.value.decision.retry_after == pytest.approx(60)
    assert "retry after 60.000s" in str(info.value)


def test_reset():
    limiter = RateLimiter("1/minute", clock=FakeClock())
    limiter.hit("k")
    assert not limiter.hit("k")
    limiter.reset("k")
    assert limiter.hit("k")


def test_acquire_waits_on_the_clock():
    clock = FakeClock()
    limiter = RateLimiter("2/second", clock=clock)
    start = clock()
    decisions = [limiter.acquire("k") for _ in range(5)]
    assert all(decisions)
    assert clock() - start == pytest.approx(1.5)


def test_acquire_really_sleeps_without_busy_looping():
    limiter = RateLimiter("20/second")
    for _ in range(20):
        limiter.hit("k")
    calls = []
    real_hit = limiter.store.hit

    def counting_hit(*args):
        calls.append(1)
        return real_hit(*args)

    limiter.store.hit = counting_hit  # type: ignore[method-assign]
    t0 = time.monotonic()
    limiter.acquire("k")
    waited = time.monotonic() - t0
    assert 0.03 <= waited < 1.0
    assert len(calls) <= 3


def test_acquire_timeout():
    clock = FakeClock()
    limiter = RateLimiter("1/minute", clock=clock)
    limiter.hit("k")
    with pytest.raises(RateLimitTimeout) as info:
        limiter.acquire("k", timeout=5)
    assert isinstance(info.value, RateLimitExceeded) and isinstance(info.value, TimeoutError)
    assert info.value.decision.retry_after == pytest.approx(60)
    assert clock() == 1_000_000.0  # it did not wait in vain
    assert limiter.acquire("k", timeout=61).allowed


def test_acquire_cost_over_capacity_fails_at_once():
    with pytest.raises(RateLimitExceeded, match="can never pass"):
        RateLimiter("2/second", clock=FakeClock()).acquire("k", cost=3)


def test_acquire_leaky_bucket_waits_its_delay():
    clock = FakeClock()
    limiter = RateLimiter("4/second", algorithm="leaky_bucket", clock=clock)
    start = clock()
    for _ in range(4):
        limiter.acquire("k")
    assert clock() - start == pytest.approx(0.75)


@pytest.mark.parametrize("timeout", [-1, float("nan"), "5", True])
def test_acquire_bad_timeout(timeout):
    with pytest.raises(ValueError, match="timeout"):
        RateLimiter("1/s").acquire("k", timeout=timeout)


async def test_async_acquire_bad_timeout():
    with pytest.raises(ValueError, match="timeout"):
        await AsyncRateLimiter("1/s").acquire("k", timeout=float("nan"))


def test_concurrency_cap_holds_and_releases():
    clock = FakeClock()
    limiter = RateLimiter("1000/second", max_concurrent=2, clock=clock)
    with limiter.acquire("job") as first, limiter.acquire("job"):
        assert first.allowed
        with pytest.raises(RateLimitTimeout, match="concurrency"):
            limiter.acquire("job", timeout=0.5)
    with limiter.acquire("job"), limiter.acquire("job"):
        pass


def test_concurrency_lease_expires_if_holder_dies():
    clock = FakeClock()
    limiter = RateLimiter("1000/second", max_concurrent=1, lease_ttl=10, clock=clock)
    limiter.acquire("job")  # never released: the holder "crashed"
    start = clock()
    with limiter.acquire("job"):  # waits until the lease runs out
        assert clock() - start == pytest.approx(10, abs=0.3)


def test_concurrency_real_threads():
    limiter = RateLimiter("100000/second", max_concurrent=3)
    inside = 0
    peak = 0
    lock = threading.Lock()

    def work():
        nonlocal inside, peak
        with limiter.acquire("job", timeout=10):
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.01)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3


def test_timeout_while_waiting_for_rate_releases_the_slot():
    clock = FakeClock()
    limiter = RateLimiter("1/minute", max_concurrent=1, clock=clock)
    limiter.hit("job")
    with pytest.raises(RateLimitTimeout):
        limiter.acquire("job", timeout=1)
    assert limiter.store.acquire_lease("job", "probe", 1, 60, clock()) == 0


def test_threads_8_by_10000_admit_exactly_the_limit():
    limiter = RateLimiter("5000/hour", clock=FakeClock())  # frozen time: nothing refills
    counts = []

    def worker():
        counts.append(sum(1 for _ in range(10_000) if limiter.hit("hot").allowed))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 5000


class DownStore(MemoryStore):
    def hit(self, *args):  # type: ignore[override]
        raise StoreUnavailable("connection refused")

    peek = hit


def test_on_store_error_raise_is_the_default():
    with pytest.raises(StoreUnavailable):
        RateLimiter("1/s", store=DownStore()).hit("k")


@pytest.mark.parametrize(("policy", "allowed"), [("allow", True), ("deny", False)])
def test_on_store_error_fallbacks(policy, allowed, caplog):
    limiter = RateLimiter("5/s", store=DownStore(), on_store_error=policy)
    with caplog.at_level(logging.WARNING, logger="ratekeeper"):
        decisions = [limiter.hit("k") for _ in range(3)] + [limiter.peek("k")]
    assert all(d.allowed is allowed and d.fallback for d in decisions)
    assert len([r for r in caplog.records if "unavailable" in r.message]) == 1  # not a flood


def test_shared_memory_store_and_close():
    store = MemoryStore()
    a = RateLimiter("1/minute", store=store)
    b = RateLimiter("1/minute", store=store)
    assert a.hit("k") and not b.hit("k")
    with RateLimiter("1/s") as limiter:
        limiter.ping()


# --- async twin ------------------------------------------------------------------------------


async def test_async_basics():
    clock = FakeClock()
    limiter = AsyncRateLimiter("2/second", clock=clock)
    assert (await limiter.hit("k")).allowed
    assert (await limiter.peek("k")).remaining == 0
    assert (await limiter.enforce("k")).allowed
    with pytest.raises(RateLimitExceeded):
        await limiter.enforce("k")
    await limiter.reset("k")
    assert (await limiter.hit("k")).allowed
    await limiter.ping()
    await limiter.close()


async def test_async_acquire_waits_on_the_clock():
    clock = FakeClock()
    limiter = AsyncRateLimiter("2/second", clock=clock)
    results = [await limiter.acquire("k") for _ in range(5)]
    assert all(isinstance(d, Decision) and d.allowed for d in results)
    assert clock() - 1_000_000.0 == pytest.approx(1.5)
    with pytest.raises(RateLimitTimeout):
        await limiter.acquire("k", timeout=0.1)


async def test_async_concurrency_cap():
    limiter = AsyncRateLimiter("100000/second", max_concurrent=2)
    inside = peak = 0

    async def work():
        nonlocal inside, peak
        async with limiter.acquire("job", timeout=10) as permit:
            assert permit.allowed
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(work() for _ in range(10)))
    assert peak == 2


async def test_async_cancelled_waiter_releases_its_slot():
    clock = FakeClock()
    limiter = AsyncRateLimiter("1/minute", max_concurrent=1)
    await limiter.hit("job")
    task = asyncio.ensure_future(limiter.acquire("job"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await limiter.store.acquire_lease("job", "probe", 1, 60, clock()) == 0


async def test_async_store_object_and_sync_memory_store_shared():
    store = MemoryStore()
    sync = RateLimiter("1/minute", store=store)
    limiter = AsyncRateLimiter("1/minute", store=store)
    assert sync.hit("k")
    assert not await limiter.hit("k")


async def test_async_fallback():
    class Down(AsyncMemoryStore):
        async def hit(self, *args):  # type: ignore[override]
            raise StoreUnavailable("down")

    limiter = AsyncRateLimiter("1/s", store=Down(), on_store_error="allow")
    d = await limiter.hit("k")
    assert d.allowed and d.fallback


async def test_async_200_tasks_exact():
    limiter = AsyncRateLimiter("50/hour")
    results = await asyncio.gather(*(limiter.hit("k") for _ in range(200)))
    assert sum(map(bool, results)) == 50


def test_store_that_cannot_run_an_algorithm_fails_at_construction():
    class GcraOnly(MemoryStore):
        algorithms = frozenset({"gcra"})

    assert RateLimiter("1/s", algorithm="gcra", store=GcraOnly()).hit("k")
    with pytest.raises(ConfigError, match="cannot run algorithm 'token_bucket'; it runs gcra"):
        RateLimiter("1/s", store=GcraOnly())


def test_a_limit_written_twice_is_one_budget():
    limiter = RateLimiter("2/second;2/second;5/minute", clock=FakeClock())
    assert limiter.limits == (Limit(2, per=1), Limit(5, per=60))
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]


def _fields(decision):
    return {name: getattr(decision, name) for name in Decision.__slots__}


def test_acquire_permit_holds_the_decisions_fields():
    limiter = RateLimiter("5/2s;30/minute", clock=FakeClock())
    limiter.hit("k")
    permit = limiter.acquire("k")
    assert _fields(permit) == _fields(limiter.peek("k", cost=0))
    assert isinstance(permit.limit, int) and isinstance(permit.policy, Limit)
    assert permit.limit == 5 and permit.remaining == 3 and permit.reset_after > 0
    assert len(permit.details) == 2 and all(isinstance(d, Decision) for d in permit.details)
    assert permit.headers() == Decision(**_fields(permit)).headers()
    assert permit.headers()["X-RateLimit-Limit"] == "5"


async def test_async_acquire_permit_holds_the_decisions_fields():
    limiter = AsyncRateLimiter("5/2s;30/minute", clock=FakeClock())
    await limiter.hit("k")
    permit = await limiter.acquire("k")
    assert _fields(permit) == _fields(await limiter.peek("k", cost=0))
    assert permit.limit == 5 and permit.remaining == 3 and isinstance(permit.policy, Limit)
    assert permit.headers()["X-RateLimit-Remaining"] == "3"
    async with limiter.acquire("k") as held:
        assert held.limit == 5 and held.remaining == 2
