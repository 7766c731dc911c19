"""Chains, reservations and priority classes on the memory store (issue 13), on a FakeClock; the
same behaviours on every other store are checked by the conformance kit."""

from __future__ import annotations

import asyncio
import math

import pytest

from ratekeeper import (
    AsyncChain,
    AsyncRateLimiter,
    Chain,
    ConfigError,
    Limit,
    RateLimiter,
    RateLimitExceeded,
    StoreUnavailable,
)
from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.algorithms.checks import CHARGE, HIT, REFUND, Check, evaluate_checks, step
from ratekeeper.stores import Rule
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore
from ratekeeper.testing import FakeClock

START = 1_700_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def limiter(store: MemoryStore, clock: FakeClock, limits: str, **options: object) -> RateLimiter:
    return RateLimiter(limits, store=store, clock=clock, **options)  # type: ignore[arg-type]


# -- Chain ----------------------------------------------------------------------------------------


def test_chain_is_all_or_nothing(store: MemoryStore, clock: FakeClock) -> None:
    tenant = limiter(store, clock, "3/minute")
    user = limiter(store, clock, "2/minute", algorithm="fixed_window")
    chain = Chain(tenant, user)
    assert chain.hit("t", "u1") and chain.hit("t", "u1")
    denied = chain.hit("t", "u1")
    assert not denied and denied.policy == Limit(2, 60)
    assert len(denied.details) == 2
    assert tenant.peek("t").remaining == 0  # 3 - 2 - (this peek's 1); the denial took nothing
    assert chain.hit("t", "u2")  # the tenant's last unit
    last = chain.hit("t", "u3")
    assert not last and last.policy == Limit(3, 60)  # the binding level is the denying one
    assert user.peek("u3").remaining == 1  # u3's own budget untouched by the denial


def test_chain_headers_list_every_level_and_the_binding_one(
    store: MemoryStore, clock: FakeClock
) -> None:
    chain = Chain(limiter(store, clock, "100/minute"), limiter(store, clock, "10/second;50/hour"))
    headers = chain.hit("g", "u").headers()
    assert headers["RateLimit-Policy"].count(";q=") == 3
    assert headers["X-RateLimit-Limit"] == "10" and headers["X-RateLimit-Remaining"] == "9"


def test_hybrid_on_one_key_and_per_level_costs(store: MemoryStore, clock: FakeClock) -> None:
    bucket = limiter(store, clock, "10/second")
    window = limiter(store, clock, "15/minute", algorithm="sliding_window")
    hybrid = Chain(bucket, window)
    assert hybrid.hit("k", cost=10)  # one key stands for every level
    clock.advance(1)
    assert not hybrid.hit("k", cost=6)  # the window has 5 left
    assert hybrid.hit("k", cost=[5, 5])
    assert hybrid.hit("k", "k", cost=(0, 0))


def test_chain_peek_enforce_reset(store: MemoryStore, clock: FakeClock) -> None:
    chain = Chain(limiter(store, clock, "1/minute"), limiter(store, clock, "5/minute"))
    assert chain.peek("a", "b").allowed
    chain.enforce("a", "b")
    with pytest.raises(RateLimitExceeded):
        chain.enforce("a", "b")
    chain.reset("a", "b")
    assert chain.hit("a", "b")


def test_chain_bad_input_consumes_nothing(store: MemoryStore, clock: FakeClock) -> None:
    a = limiter(store, clock, "5/minute")
    with pytest.raises(ConfigError, match="at least one"):
        Chain()
    with pytest.raises(ConfigError, match="share one store"):
        Chain(a, RateLimiter("5/minute", clock=clock))
    with pytest.raises(ConfigError, match="must be a RateLimiter"):
        Chain(a, AsyncRateLimiter("5/minute", store=AsyncMemoryStore(store)))  # type: ignore[arg-type]
    chain = Chain(a, limiter(store, clock, "3/minute"))
    for bad in [("x", "y", "z"), ()]:
        with pytest.raises(ValueError, match="one key per limiter"):
            chain.hit(*bad)
    with pytest.raises(ValueError, match="key must be a str"):
        chain.hit("x", 7)  # type: ignore[arg-type]
    for cost in (-1, math.nan, math.inf, [1], "1"):
        with pytest.raises(ValueError):
            chain.hit("x", "y", cost=cost)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown priority"):
        chain.hit("x", "y", priority="batch")
    assert a.peek("x").remaining == 4


def test_async_chain(store: MemoryStore, clock: FakeClock) -> None:
    async def main() -> None:
        shared = AsyncMemoryStore(store)
        chain = AsyncChain(
            AsyncRateLimiter("2/minute", store=shared, clock=clock),
            AsyncRateLimiter("1/minute", store=shared, clock=clock),
        )
        assert await chain.hit("a", "b")
        assert not await chain.hit("a", "b")
        async with chain.reserve("a", "c", cost=1) as r:
            assert r
            await r.commit(0)
        assert (await chain.peek("a", "c")).allowed
        await chain.reset("a", "b")

    asyncio.run(main())


# -- Reservations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_commit_below_the_estimate_is_a_hit_of_the_actual(
    store: MemoryStore, clock: FakeClock, algorithm: str
) -> None:
    reserved = limiter(store, clock, "10/minute", algorithm=algorithm)
    plain = limiter(MemoryStore(), clock, "10/minute", algorithm=algorithm)
    r = reserved.reserve("k", cost=8)
    assert r and r.decision.remaining == 2
    plain.hit("k", cost=3)
    clock.advance(5)
    r.commit(3)
    for cost in (1, 6, 7, 8):
        assert reserved.peek("k", cost=cost) == plain.peek("k", cost=cost)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_commit_above_the_estimate_goes_into_debt(
    store: MemoryStore, clock: FakeClock, algorithm: str
) -> None:
    lim = limiter(store, clock, "10/minute", algorithm=algorithm)
    r = lim.reserve("k", cost=2)
    r.commit(15)  # it already happened: charged unconditionally
    denied = lim.hit("k")
    assert not denied and denied.retry_after > 0
    with pytest.raises(RuntimeError, match="already settled"):
        r.commit(1)
    with pytest.raises(RuntimeError, match="already settled"):
        r.cancel()


@pytest.mark.parametrize("algorithm", ["token_bucket", "gcra", "leaky_bucket"])
def test_a_debt_outlives_the_horizon(store: MemoryStore, clock: FakeClock, algorithm: str) -> None:
    """A budget in debt takes longer than the algorithm's horizon to replenish: the memory
    store must not evict it as replenished."""
    lim = limiter(store, clock, "3/second", algorithm=algorithm)
    lim.reserve("k", cost=1).commit(12)  # 9 units of debt: one unit back after 10/3 s
    for _ in range(2):
        clock.advance(1.2)  # past the horizon (1 s), still in debt
        assert not lim.hit("k")
    clock.advance(1.2)
    assert lim.hit("k")


def test_token_bucket_refund_is_capped_at_the_burst(store: MemoryStore, clock: FakeClock) -> None:
    lim = limiter(store, clock, "10/minute")
    r = lim.reserve("k", cost=5)
    clock.advance(60)  # refilled meanwhile
    r.cancel()
    assert lim.peek("k", cost=10).allowed and not lim.peek("k", cost=11).allowed


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "sliding_log"])
def test_window_refund_only_while_the_window_counts(
    store: MemoryStore, clock: FakeClock, algorithm: str
) -> None:
    clock.advance(60 - START % 60)  # at the start of a window
    lim = limiter(store, clock, "10/minute", algorithm=algorithm)
    lim.hit("k", cost=4)
    r = lim.reserve("k", cost=6)
    clock.advance(150)  # two windows later: the charge no longer counts anywhere
    r.cancel()
    assert lim.peek("k", cost=10).allowed and not lim.peek("k", cost=11).allowed


def test_unsettled_reservation_keeps_its_estimate(store: MemoryStore, clock: FakeClock) -> None:
    lim = limiter(store, clock, "10/minute")
    with lim.reserve("k", cost=4) as r:
        assert r
    assert lim.peek("k", cost=6).allowed and not lim.peek("k", cost=7).allowed
    assert not r.settled


def test_streaming_charge_then_settle(store: MemoryStore, clock: FakeClock) -> None:
    lim = limiter(store, clock, "100/minute")
    with lim.reserve("k", cost=10) as r:
        for _ in range(4):
            r.charge(4)  # 16 used: 6 past the estimate charged as they come
            assert lim.peek("k", cost=0).remaining == 100 - max(10, sum(r.used))
    assert r.settled  # the block settled at what was counted
    assert lim.peek("k", cost=0).remaining == 84
    with lim.reserve("j", cost=10) as r:
        r.charge(3)
    assert lim.peek("j", cost=0).remaining == 97  # 7 of the estimate given back


def test_denied_reservation_charges_nothing_until_committed(
    store: MemoryStore, clock: FakeClock
) -> None:
    lim = limiter(store, clock, "5/minute")
    r = lim.reserve("k", cost=6)
    assert not r and r.decision.retry_after == math.inf
    assert lim.peek("k", cost=5).allowed
    r.commit(2)
    assert lim.peek("k", cost=3).allowed and not lim.peek("k", cost=4).allowed


def test_reservation_bad_input(store: MemoryStore, clock: FakeClock) -> None:
    lim = limiter(store, clock, "5/minute")
    for bad in (-1, math.nan, math.inf, "3", True):
        with pytest.raises(ValueError):
            lim.reserve("k", cost=bad)  # type: ignore[arg-type]
    r = lim.reserve("k", cost=2)
    for bad in (-1, math.nan, [1, 2]):
        with pytest.raises(ValueError):
            r.commit(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            r.charge(bad)  # type: ignore[arg-type]
    assert not r.settled and lim.peek("k", cost=0).remaining == 3


def test_chain_reservation_per_level(store: MemoryStore, clock: FakeClock) -> None:
    requests = limiter(store, clock, "3/minute")
    tokens = limiter(store, clock, "1000/minute")
    llm = Chain(requests, tokens)
    r = llm.reserve("user", cost=[1, 400])
    r.commit([1, 120])
    assert requests.peek("user", cost=0).remaining == 2
    assert tokens.peek("user", cost=0).remaining == 880


def test_settlement_failure_follows_on_store_error(clock: FakeClock) -> None:
    class Down(MemoryStore):
        down = False

        def apply_checks(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            if self.down:
                raise StoreUnavailable("down")
            return super().apply_checks(*args, **kwargs)  # type: ignore[arg-type]

    store = Down()
    strict = limiter(store, clock, "5/minute")
    lenient = limiter(store, clock, "5/minute", on_store_error="allow")
    r1, r2 = strict.reserve("a", cost=2), lenient.reserve("b", cost=2)
    store.down = True
    with pytest.raises(StoreUnavailable):
        r1.commit(1)
    assert not r1.settled
    r2.commit(1)  # dropped, logged
    assert r2.settled
    fallback = lenient.reserve("c", cost=1)
    assert fallback and fallback.decision.fallback
    store.down = False
    fallback.commit(1)  # a fallback charged nothing: the actual is charged now
    assert lenient.peek("c", cost=0).remaining == 4


def test_async_reserve(store: MemoryStore, clock: FakeClock) -> None:
    async def main() -> None:
        lim = AsyncRateLimiter("10/minute", store=AsyncMemoryStore(store), clock=clock)
        r = await lim.reserve("k", cost=5)
        await r.charge(2)
        await r.commit()
        assert (await lim.peek("k", cost=0)).remaining == 8
        async with lim.reserve("j", cost=4) as held:
            await held.cancel()
        assert (await lim.peek("j", cost=0)).remaining == 10

    asyncio.run(main())


# -- Priorities -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_class_uses_only_its_share(store: MemoryStore, clock: FakeClock, algorithm: str) -> None:
    lim = limiter(
        store,
        clock,
        "10/minute",
        algorithm=algorithm,
        priorities={"critical": 1.0, "default": 0.8, "batch": 0.5},
    )
    assert [lim.hit("k", priority="batch").allowed for _ in range(6)] == [True] * 5 + [False]
    denied = lim.hit("k", priority="batch")
    assert denied.remaining == 0 and denied.retry_after > 0
    assert lim.peek("k", cost=0).remaining == 3  # the default class: up to 8 in use
    assert [lim.hit("k").allowed for _ in range(4)] == [True] * 3 + [False]
    assert [lim.hit("k", priority="critical").allowed for _ in range(3)] == [True, True, False]


def test_priority_retry_after_is_exact(store: MemoryStore, clock: FakeClock) -> None:
    lim = limiter(store, clock, "10/minute", priorities={"batch": 0.5})
    lim.hit("k", cost=5, priority="batch")
    denied = lim.hit("k", priority="batch")
    assert denied.retry_after == pytest.approx(6.0)
    clock.advance(denied.retry_after - 0.01)
    assert not lim.hit("k", priority="batch")
    clock.advance(0.01)
    assert lim.hit("k", priority="batch")


def test_priority_bad_input(store: MemoryStore, clock: FakeClock) -> None:
    for bad in ({"batch": 0}, {"batch": 1.5}, {"batch": math.nan}, {"": 0.5}, {}, ["batch"]):
        with pytest.raises(ConfigError):
            limiter(store, clock, "10/minute", priorities=bad)
    lim = limiter(store, clock, "10/minute", priorities={"batch": 0.5})
    with pytest.raises(ValueError, match="unknown priority class 'bulk'"):
        lim.hit("k", priority="bulk")
    with pytest.raises(ValueError, match="unknown priority class"):
        limiter(store, clock, "10/minute").hit("k", priority="batch")
    assert lim.peek("k", cost=0).remaining == 10


def test_a_store_without_apply_checks_is_refused(clock: FakeClock) -> None:
    store = MemoryStore()
    store.apply_checks = None  # type: ignore[method-assign,assignment]
    with pytest.raises(ConfigError, match="apply_checks"):
        RateLimiter("1/second", store=store, priorities={"a": 0.5})


# -- The pure operation ---------------------------------------------------------------------------


def test_checks_on_one_state_apply_in_order() -> None:
    rule = Rule("token_bucket", (Limit(5, 60),))
    first = Check("k", rule, 3)
    second = Check("k", rule, 3)
    writes, decisions, _ = evaluate_checks([first, second], {("k", rule.parts[0]): None}, START)
    assert writes is None and [d.allowed for d in decisions] == [True, False]
    assert decisions[0].remaining == 5  # reported as it is, without this request's cost
    assert decisions[1].retry_after == pytest.approx(12.0)  # 6 units needed, 5 there, 1 per 12 s


def test_refund_and_charge_steps() -> None:
    bucket = ALGORITHMS["token_bucket"]
    limit = Limit(10, 60)
    state, _ = step(bucket, None, START, 10, limit, HIT)
    state, decision = step(bucket, state, START, 4, limit, REFUND, at=START)
    assert decision.remaining == 4
    state, decision = step(bucket, state, START, 20, limit, CHARGE)
    assert decision.allowed and decision.remaining == 0 and decision.reset_after == 156.0
