"""Penalties, adaptive limits and quota pools (issue 13, points 4-6) on the memory store, on a
FakeClock: behaviour, bad input (a clear error, nothing consumed) and the store failure policy.
The same behaviours on every other store are checked by the conformance kit."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest

from ratekeeper import (
    AdaptiveLimiter,
    AsyncAdaptiveLimiter,
    AsyncPenalty,
    AsyncQuotaPool,
    AsyncRateLimiter,
    ConfigError,
    Penalty,
    QuotaPool,
    RateLimiter,
    RateLimitExceeded,
    StoreUnavailable,
)
from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.algorithms.checks import Check
from ratekeeper.limits import Limit
from ratekeeper.policies._steps import share_for
from ratekeeper.stores.base import Applied
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing import FakeClock

START = 1_700_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


class Down(MemoryStore):
    """A memory store whose apply_checks fails while ``down``."""

    down = False

    def apply_checks(self, checks: Sequence[Check], now: float, write: bool = True) -> Applied:
        if self.down:
            raise StoreUnavailable("down")
        return super().apply_checks(checks, now, write)


def penalty(clock: FakeClock, store: MemoryStore | None = None, **options: object) -> Penalty:
    settings: dict[str, object] = {"after": 2, "within": 10, "ban": 5, "max_ban": 40}
    settings.update(options)
    return Penalty(
        RateLimiter("2/minute", store=MemoryStore() if store is None else store, clock=clock),
        **settings,
    )  # type: ignore[arg-type]


# -- penalties ---------------------------------------------------------------------------------


def test_penalty_bans_after_repeated_denials_for_a_growing_time(clock: FakeClock) -> None:
    p = penalty(clock)
    assert [p.hit("k").allowed for _ in range(4)] == [True, True, False, False]
    assert p.banned("k") == 5.0 and p.banned("other") == 0.0
    for ban in (10.0, 20.0, 40.0, 40.0):  # doubled each offence, capped at max_ban
        clock.advance(60)  # the limiter's budget is back...
        assert p.hit("k") and p.hit("k")
        assert not p.hit("k") and not p.hit("k")  # ...two more denials: banned again
        assert p.banned("k") == ban
    clock.advance(39)
    denied = p.hit("k")
    assert not denied and denied.retry_after == pytest.approx(1.0) and denied.remaining == 0


def test_a_ban_consumes_nothing_and_its_denials_are_not_strikes(clock: FakeClock) -> None:
    store = MemoryStore()
    p = penalty(clock, store, after=1, ban=30)
    plain = RateLimiter("2/minute", store=store, clock=clock)
    assert p.hit("k") and p.hit("k") and not p.hit("k")
    assert p.banned("k") == 30.0
    clock.advance(29)
    assert all(not p.hit("k") for _ in range(5))
    assert p.banned("k") == pytest.approx(1.0)  # the denials during the ban added nothing
    clock.advance(1)
    assert p.hit("k")  # the budget refilled meanwhile: the ban took none of it
    assert plain.peek("k", cost=0).remaining == 0


def test_offences_are_forgotten_one_every_forget_seconds(clock: FakeClock) -> None:
    p = penalty(clock, after=1, ban=5, forget=1000)
    for ban in (5.0, 10.0, 20.0):
        clock.advance(60)
        assert p.hit("k") and p.hit("k") and not p.hit("k")
        assert p.banned("k") == ban
    clock.advance(2000)  # two of the three offences forgotten
    assert p.hit("k") and p.hit("k") and not p.hit("k")
    assert p.banned("k") == 10.0


def test_penalty_reset_clears_budget_strikes_ban_and_offences(clock: FakeClock) -> None:
    p = penalty(clock)
    for _ in range(4):
        p.hit("k")
    p.reset("k")
    assert p.banned("k") == 0.0
    assert [p.hit("k").allowed for _ in range(4)] == [True, True, False, False]
    assert p.banned("k") == 5.0  # a first offence again


def test_penalty_peek_and_enforce(clock: FakeClock) -> None:
    p = penalty(clock)
    assert p.peek("k").remaining == 1 and p.peek("k").remaining == 1
    p.enforce("k")
    p.enforce("k")
    for _ in range(2):
        with pytest.raises(RateLimitExceeded):
            p.enforce("k")
    assert not p.peek("k") and p.peek("k").retry_after >= 5.0 and p.banned("k") == 5.0


def test_a_penalty_ban_is_shared_through_the_store(clock: FakeClock) -> None:
    store = MemoryStore()
    here, there = penalty(clock, store), penalty(clock, store)
    for _ in range(4):
        here.hit("k")
    assert there.banned("k") == 5.0 and not there.hit("k")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"after": 0}, "after"),
        ({"after": 1.5}, "after"),
        ({"within": 0}, "within"),
        ({"ban": -1}, "ban"),
        ({"ban": math.nan}, "ban"),
        ({"factor": 0.5}, "factor"),
        ({"max_ban": None}, "max_ban is needed"),
        ({"max_ban": 1}, "max_ban"),
        ({"forget": 0}, "forget"),
    ],
)
def test_penalty_bad_settings(clock: FakeClock, options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        penalty(clock, **options)


def test_penalty_bad_input_consumes_nothing(clock: FakeClock) -> None:
    p = penalty(clock)
    with pytest.raises(ConfigError, match="wraps a RateLimiter"):
        Penalty(AsyncRateLimiter("1/second"), after=1, within=1, ban=1, max_ban=2)  # type: ignore[arg-type]
    for bad in (-1, math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="cost"):
            p.hit("k", cost=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        p.hit(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        p.hit("k", priority="nope")
    assert p.peek("k", cost=0).remaining == 2


def test_penalty_store_failure_policy(clock: FakeClock) -> None:
    store = Down()
    raising = penalty(clock, store)
    allowing = Penalty(
        RateLimiter("2/minute", store=store, clock=clock, on_store_error="allow"),
        after=1,
        within=10,
        ban=5,
        max_ban=5,
    )
    store.down = True
    with pytest.raises(StoreUnavailable):
        raising.hit("k")
    decision = allowing.hit("k")
    assert decision and decision.fallback


# -- adaptive limits ---------------------------------------------------------------------------


def test_adaptive_limit_moves_by_aimd(clock: FakeClock) -> None:
    a = AdaptiveLimiter(min=2, max=10, per=1, clock=clock, increase=2, latency=0.5)
    assert a.limit("k") == 10
    assert [a.hit("k").allowed for _ in range(11)] == [True] * 10 + [False]
    assert a.record("k", ok=False) == 5
    assert a.record("k", ok=False) == 5  # one decrease per cooldown (one window by default)
    clock.advance(1)
    assert a.record("k", latency=0.9) == 2.5  # too slow: a failure
    clock.advance(1)
    assert a.record("k", ok=False) == 2  # never below min
    decision = a.hit("k")
    assert decision and decision.limit == 2 and decision.remaining == 1
    assert a.hit("k") and not a.hit("k")
    assert a.record("k", latency=0.1) == 4 and a.record("k") == 6  # additive increase
    for _ in range(5):
        a.record("k")
    assert a.limit("k") == 10  # never above max
    a.reset("k")
    assert a.limit("k") == 10 and a.peek("k").remaining == 9


def test_adaptive_limit_recovers_over_time(clock: FakeClock) -> None:
    a = AdaptiveLimiter(min=10, max=110, per=1, clock=clock, recover=100, decrease=0.1)
    assert a.record("k", ok=False) == 11
    clock.advance(50)
    assert a.limit("k") == 61


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"min": 0}, "min"),
        ({"min": 5, "max": 5}, "min must be below max"),
        ({"max": 2.5}, "max"),
        ({"algorithm": "token_bucket"}, "window algorithm"),
        ({"decrease": 1.0}, "decrease"),
        ({"decrease": 0}, "decrease"),
        ({"increase": -1}, "increase"),
        ({"latency": -0.1}, "latency"),
        ({"cooldown": math.inf}, "cooldown"),
        ({"recover": 0}, "recover"),
        ({"on_store_error": "maybe"}, "on_store_error"),
    ],
)
def test_adaptive_bad_settings(options: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"min": 1, "max": 10}
    settings.update(options)
    with pytest.raises(ConfigError, match=match):
        AdaptiveLimiter(**settings)  # type: ignore[arg-type]


def test_adaptive_bad_input_changes_nothing(clock: FakeClock) -> None:
    a = AdaptiveLimiter(min=1, max=10, clock=clock)
    with pytest.raises(ValueError, match="ok"):
        a.record("k", ok=None)  # type: ignore[arg-type]
    for bad in (-1.0, math.nan, "slow"):
        with pytest.raises(ValueError, match="latency"):
            a.record("k", latency=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost"):
        a.hit("k", cost=-1)
    assert a.limit("k") == 10 and a.peek("k", cost=0).remaining == 10


def test_adaptive_store_failure_policy(clock: FakeClock) -> None:
    store = Down()
    a = AdaptiveLimiter(min=1, max=10, store=store, clock=clock, on_store_error="deny")
    store.down = True
    decision = a.hit("k")
    assert not decision and decision.fallback
    assert math.isnan(a.record("k", ok=False))  # dropped and logged, as a settlement is
    raising = AdaptiveLimiter(min=1, max=10, store=store, clock=clock)
    with pytest.raises(StoreUnavailable):
        raising.record("k", ok=False)


# -- quota pools -------------------------------------------------------------------------------


def test_quota_pool_caps_members_and_the_pool(clock: FakeClock) -> None:
    pool = QuotaPool(total_quota=10, window=60, clock=clock)
    pool.allocate("a", 4)
    pool.allocate("b", 8)  # allocations may add up past the total
    assert [pool.hit("a").allowed for _ in range(5)] == [True] * 4 + [False]
    denied = pool.hit("b", cost=7)  # within b's 8, but the pool has 6 left
    assert not denied and denied.limit == 10 and denied.remaining == 6
    mine = pool.hit("b", cost=6)
    assert mine and [d.limit for d in mine.details] == [10, 8]
    assert not pool.hit("c")  # no allocation: denied...
    assert pool.hit("c").retry_after == math.inf  # ...for good
    clock.advance(60)
    assert pool.hit("a", cost=4) and not pool.hit("a")


def test_quota_pool_reallocation_keeps_the_window_usage(clock: FakeClock) -> None:
    pool = QuotaPool(total_quota=100, window=60, clock=clock)
    pool.allocate("a", 10)
    assert pool.hit("a", cost=8)
    pool.allocate("a", 5)
    assert pool.allocation("a") == 5 and not pool.hit("a")
    pool.allocate("a", 12)
    assert pool.hit("a", cost=4) and not pool.hit("a")
    pool.allocate("a", 0)
    assert pool.allocation("a") == 0 and not pool.hit("a", cost=0)
    pool.reset("a")
    pool.allocate("a", 3)
    assert pool.peek("a").remaining == 2


def test_quota_pool_borrowing(clock: FakeClock) -> None:
    strict = QuotaPool(total_quota=10, window=60, clock=clock, name="strict")
    lender = QuotaPool(total_quota=10, window=60, clock=clock, name="lender", borrow=0.7)
    for pool in (strict, lender):
        pool.allocate("a", 2)
        pool.allocate("b", 5)
    assert [strict.hit("a").allowed for _ in range(9)].count(True) == 2  # nothing borrowed
    assert [lender.hit("a").allowed for _ in range(9)].count(True) == 7  # up to 70% of the pool
    assert [lender.hit("b").allowed for _ in range(9)].count(True) == 3  # the rest, in quota
    lender.reset_pool()
    assert lender.hit("b")


def test_quota_pool_large_totals_admit_exactly_the_allocation(clock: FakeClock) -> None:
    for total in (10**6, 10**9, 2**40):
        pool = QuotaPool(total_quota=total, window=60, clock=clock, name=f"p{total}")
        pool.allocate("a", 100)
        assert pool.hit("a", cost=100) and not pool.hit("a", cost=0.01), total
    for algorithm in ALGORITHMS:
        whole = Limit(10**9, per=1)
        from ratekeeper.algorithms import get_algorithm

        alg = get_algorithm(algorithm)
        share = share_for(100, whole, alg)
        assert alg.size(whole) - (1.0 - share) * alg.size(whole) >= 100, algorithm


def test_quota_pool_allocations_are_shared_through_the_store(clock: FakeClock) -> None:
    store = MemoryStore()
    here = QuotaPool(total_quota=10, window=60, store=store, clock=clock)
    there = QuotaPool(total_quota=10, window=60, store=store, clock=clock)
    here.allocate("a", 3)
    assert there.allocation("a") == 3
    assert there.hit("a", cost=3) and not here.hit("a")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"total_quota": 0}, "total_quota"),
        ({"total_quota": 1.5}, "total_quota"),
        ({"window": 0}, "window"),
        ({"algorithm": "gcra"}, "window algorithm"),
        ({"borrow": 1.5}, "borrow"),
        ({"borrow": 0.0}, "borrow"),
        ({"name": ""}, "name"),
    ],
)
def test_quota_pool_bad_settings(options: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"total_quota": 10, "window": 60}
    settings.update(options)
    with pytest.raises(ConfigError, match=match):
        QuotaPool(**settings)  # type: ignore[arg-type]


def test_quota_pool_bad_input_changes_nothing(clock: FakeClock) -> None:
    pool = QuotaPool(total_quota=10, window=60, clock=clock)
    pool.allocate("a", 4)
    for bad in (-1, 11, 2.5, "3", None):
        with pytest.raises(ConfigError, match="quota"):
            pool.allocate("a", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost"):
        pool.hit("a", cost=math.nan)
    with pytest.raises(ValueError, match="key"):
        pool.allocate(7, 1)  # type: ignore[arg-type]
    assert pool.allocation("a") == 4 and pool.peek("a", cost=0).remaining == 4


def test_a_store_without_apply_checks_is_refused() -> None:
    class Plain:  # the single-key store interface only
        def hit(self, *args: object) -> None: ...
        def peek(self, *args: object) -> None: ...
        def reset(self, *args: object) -> None: ...
        def acquire_lease(self, *args: object) -> None: ...
        def release_lease(self, *args: object) -> None: ...
        def ping(self) -> None: ...
        def close(self) -> None: ...

    with pytest.raises(ConfigError, match="apply_checks"):
        QuotaPool(total_quota=10, window=60, store=Plain())
    with pytest.raises(ConfigError, match="apply_checks"):
        AdaptiveLimiter(min=1, max=10, store=Plain())
    with pytest.raises(ConfigError, match="apply_checks"):
        Penalty(RateLimiter("1/second", store=Plain()), after=1, within=1, ban=1, max_ban=1)  # type: ignore[arg-type]


# -- the asyncio faces -------------------------------------------------------------------------


def test_async_faces(clock: FakeClock) -> None:
    async def run() -> None:
        p = AsyncPenalty(
            AsyncRateLimiter("1/minute", clock=clock), after=1, within=10, ban=5, max_ban=5
        )
        assert await p.hit("k") and not await p.hit("k")
        assert await p.banned("k") == 5.0 and not await p.peek("k")
        with pytest.raises(RateLimitExceeded):
            await p.enforce("k")
        await p.reset("k")
        assert await p.banned("k") == 0.0
        a = AsyncAdaptiveLimiter(min=1, max=4, clock=clock)
        assert await a.record("k", ok=False) == 2 and await a.limit("k") == 2
        assert await a.hit("k") and await a.enforce("k") and not await a.peek("k")
        await a.reset("k")
        assert await a.limit("k") == 4
        await a.close()
        pool = AsyncQuotaPool(total_quota=5, window=60, clock=clock)
        await pool.allocate("m", 2)
        assert await pool.allocation("m") == 2
        assert await pool.hit("m") and await pool.enforce("m") and not await pool.peek("m")
        await pool.reset("m")
        await pool.reset_pool()
        assert await pool.hit("m", cost=2)
        await pool.close()

    asyncio.run(run())
