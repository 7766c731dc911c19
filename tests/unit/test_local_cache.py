"""The exact over-limit local cache: denials answered without the store, never a wrong answer."""

from __future__ import annotations

import math

import pytest

from ratekeeper import AsyncRateLimiter, ConfigError, Decision, Limit, RateLimiter
from ratekeeper.stores.base import Rule
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore
from ratekeeper.testing import FakeClock


class CountingStore(MemoryStore):
    """A memory store that counts the calls the limiter makes to it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"hit": 0, "peek": 0, "reset": 0}

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        self.calls["hit"] += 1
        return super().hit(key, rule, cost, now)

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        self.calls["peek"] += 1
        return super().peek(key, rule, cost, now)

    def reset(self, key: str, rule: Rule) -> None:
        self.calls["reset"] += 1
        super().reset(key, rule)


class AsyncCountingStore(AsyncMemoryStore):
    """The asyncio face of a CountingStore."""

    def __init__(self) -> None:
        super().__init__(CountingStore())
        self.calls = self.sync.calls  # type: ignore[attr-defined]


ALGORITHMS = [
    "token_bucket",
    "leaky_bucket",
    "fixed_window",
    "sliding_window",
    "sliding_log",
    "gcra",
]


def limiter(algorithm: str = "fixed_window", cache: bool | int = True, limits: str = "3/10s"):
    clock = FakeClock(1_000.0)  # on a window edge: fixed windows start at multiples of 10 s
    store = CountingStore()
    return RateLimiter(limits, algorithm=algorithm, store=store, clock=clock, local_cache=cache), (
        store,
        clock,
    )


def test_off_by_default() -> None:
    clock = FakeClock()
    store = CountingStore()
    lim = RateLimiter("1/minute", store=store, clock=clock)
    for _ in range(5):
        lim.hit("k")
    assert store.calls["hit"] == 5


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_denials_are_answered_locally_until_retry_after(algorithm: str) -> None:
    lim, (store, clock) = limiter(algorithm)
    reference = RateLimiter("3/10s", algorithm=algorithm, clock=clock)
    for _ in range(3):
        assert lim.hit("k") and reference.hit("k")
    denied = lim.hit("k")
    assert not denied and not reference.hit("k")
    assert store.calls["hit"] == 4
    retry = denied.retry_after
    assert 0 < retry < math.inf
    clock.advance(retry / 2)
    local = lim.hit("k")
    expected = reference.hit("k")
    assert store.calls["hit"] == 4  # no round trip
    assert not local.allowed and not expected.allowed
    assert local.retry_after == pytest.approx(expected.retry_after)
    assert local.retry_after == pytest.approx(retry / 2)
    assert local.limit == expected.limit and local.policy == expected.policy
    assert not local.fallback
    assert "Retry-After" in local.headers()
    clock.advance(retry / 2)
    assert lim.hit("k").allowed
    assert reference.hit("k").allowed
    assert store.calls["hit"] == 5


def test_only_costs_at_least_the_denied_one_are_answered_locally() -> None:
    lim, (store, _) = limiter("token_bucket", limits="10/10s")
    assert lim.hit("k", cost=8)
    assert not lim.hit("k", cost=5)  # 2 tokens left: denied for cost 5
    calls = store.calls["hit"]
    assert not lim.hit("k", cost=5)
    assert not lim.hit("k", cost=7)  # more than the denied cost: denied too, locally
    assert store.calls["hit"] == calls
    assert lim.hit("k", cost=2)  # smaller: goes to the store, and passes
    assert store.calls["hit"] == calls + 1


def test_larger_costs_get_a_lower_bound_retry_after() -> None:
    lim, (_, clock) = limiter("token_bucket", limits="10/10s")
    assert lim.hit("k", cost=10)
    first = lim.hit("k", cost=2)
    bigger = lim.hit("k", cost=6)
    assert not bigger.allowed
    assert bigger.retry_after == pytest.approx(first.retry_after)
    clock.advance(bigger.retry_after)
    assert not lim.hit("k", cost=6)  # the store decides again, with the exact wait
    assert lim.hit("k", cost=2)


def test_cost_larger_than_capacity_is_cached_forever() -> None:
    lim, (store, clock) = limiter("token_bucket")
    denied = lim.hit("k", cost=4)
    assert not denied and denied.retry_after == math.inf
    clock.advance(10_000)
    again = lim.hit("k", cost=4)
    assert not again and again.retry_after == math.inf
    assert store.calls["hit"] == 1
    assert lim.hit("k", cost=1)  # a smaller cost still goes to the store


def test_reset_through_the_limiter_clears_the_entry() -> None:
    lim, (store, _) = limiter()
    for _ in range(4):
        lim.hit("k")
    assert not lim.hit("k")
    lim.reset("k")
    assert store.calls["reset"] == 1
    assert lim.hit("k")
    assert store.calls["hit"] == 5


def test_peek_respects_the_cache_and_fills_it() -> None:
    lim, (store, clock) = limiter()
    for _ in range(3):
        lim.hit("k")
    peeked = lim.peek("k")
    assert not peeked and store.calls["peek"] == 1
    hits = store.calls["hit"]
    assert not lim.hit("k")  # the peek's denial is as exact as a hit's
    assert not lim.peek("k")
    assert store.calls["hit"] == hits and store.calls["peek"] == 1
    clock.advance(peeked.retry_after)
    assert lim.peek("k") and store.calls["peek"] == 2


def test_keys_are_independent() -> None:
    lim, (store, _) = limiter()
    for _ in range(4):
        lim.hit("a")
    assert lim.hit("b")
    assert store.calls["hit"] == 5


def test_memory_is_bounded() -> None:
    lim, (store, _) = limiter(cache=3, limits="1/10s")
    for i in range(10):
        lim.hit(f"k{i}")
        assert not lim.hit(f"k{i}")
    assert lim._cache is not None and len(lim._cache) == 3
    calls = store.calls["hit"]
    assert not lim.hit("k9")  # a recent denial: local
    assert store.calls["hit"] == calls
    assert not lim.hit("k0")  # evicted: asks the store again (still denied)
    assert store.calls["hit"] == calls + 1


def test_default_size_is_bounded() -> None:
    lim, _ = limiter(limits="1/10s")
    assert lim._cache is not None
    for i in range(10_050):
        lim.hit(f"k{i}")
        lim.hit(f"k{i}")
    assert len(lim._cache) == 10_000


def test_multi_limit_denial_is_cached_with_its_details() -> None:
    lim, (store, clock) = limiter(limits="2/10s;3/100s")
    assert lim.hit("k") and lim.hit("k")
    denied = lim.hit("k")
    assert not denied and len(denied.per_limit) == 2
    clock.advance(1)
    local = lim.hit("k")
    assert store.calls["hit"] == 3
    assert len(local.per_limit) == 2
    assert local.retry_after == pytest.approx(denied.retry_after - 1)
    assert "RateLimit-Policy" in local.headers()


def test_fallback_denials_are_not_cached() -> None:
    from ratekeeper.errors import StoreUnavailable

    class Down(CountingStore):
        def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
            self.calls["hit"] += 1
            raise StoreUnavailable("down")

    store = Down()
    lim = RateLimiter("1/s", store=store, on_store_error="deny", local_cache=True)
    assert not lim.hit("k") and not lim.hit("k")
    assert store.calls["hit"] == 2


@pytest.mark.parametrize("bad", [0, -1, "yes", 1.5])
def test_bad_option(bad: object) -> None:
    with pytest.raises(ConfigError):
        RateLimiter("1/s", local_cache=bad)  # type: ignore[arg-type]


def test_acquire_waits_through_the_cache() -> None:
    lim, (_, clock) = limiter()
    for _ in range(3):
        lim.hit("k")
    start = clock()
    permit = lim.acquire("k")
    assert permit.allowed and clock() - start == pytest.approx(10.0)


async def test_async_twin_shares_the_logic() -> None:
    clock = FakeClock(1_000.0)
    store = AsyncCountingStore()
    lim = AsyncRateLimiter("2/10s", algorithm="gcra", store=store, clock=clock, local_cache=True)
    assert await lim.hit("k") and await lim.hit("k")
    denied = await lim.hit("k")
    assert not denied
    assert not await lim.hit("k") and not await lim.peek("k")
    assert store.calls["hit"] == 3 and store.calls["peek"] == 0
    await lim.reset("k")
    assert await lim.hit("k")
    assert store.calls["hit"] == 4
    clock.advance(100)
    assert await lim.hit("k")


def test_limit_object_and_store_url() -> None:
    lim = RateLimiter(Limit(1, per=60), store="memory://", local_cache=True)
    assert lim.hit("k") and not lim.hit("k") and not lim.hit("k")


class ServerTimeStore(MemoryStore):
    """A store that reads its own clock (as Redis `TIME` or PostgreSQL `clock_timestamp()` do)
    and ignores the app server's."""

    def __init__(self, server_clock: FakeClock) -> None:
        super().__init__()
        self.server_clock = server_clock

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return super().hit(key, rule, cost, self.server_clock())

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return super().peek(key, rule, cost, self.server_clock())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_cached_denial_never_outlives_the_store_when_the_app_clock_steps_back(
    algorithm: str,
) -> None:
    server = FakeClock(1_000.0)
    app = FakeClock(1_000.0)
    store = ServerTimeStore(server)
    lim = RateLimiter("3/10s", algorithm=algorithm, store=store, clock=app, local_cache=True)
    while lim.hit("k"):
        pass
    denied = lim.hit("k")
    assert not denied
    app.set(app() - 600)  # NTP steps the app server's clock back 10 minutes
    server.advance(denied.retry_after)  # the store's own time goes on: it admits again
    app.advance(denied.retry_after)
    again = lim.hit("k")
    assert again.allowed, again
    assert not again.fallback
