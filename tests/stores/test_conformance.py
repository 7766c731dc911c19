"""One behavioural suite for every store: traces replayed against the pure reference (the memory
store under the same FakeClock) must give the same decisions, field by field."""

from __future__ import annotations

import random
import threading
import uuid

import pytest

from ratekeeper import AsyncRateLimiter, Limit, RateLimiter
from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.decision import Decision
from ratekeeper.limits import MAX_AMOUNT, MAX_PERIOD, MIN_PERIOD
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing import FakeClock

LIMIT_SETS = {
    "single": [Limit(5, per=2)],
    "burst": [Limit(4, per=1, burst=6)],
    "multi": [Limit(3, per=1), Limit(7, per=10)],
    "repeated": [Limit(2, per=1), Limit(2, per=1)],  # one budget, however often it is written
}


# Today's Unix time: a float step of 2.4e-7 s, where absolute times (GCRA's TAT, the token
# bucket's refill time) carry noise that small test clocks never show.
EPOCH = 1_700_000_000.123456


def key() -> str:
    return f"conf:{uuid.uuid4().hex}"


def trace(seed: int, steps: int = 60) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(steps):
        advance = rng.choice([0.0, 0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 1.7, 3.0])
        cost = rng.choice([1, 1, 1, 2, 0, 3, 0.5, 9])
        out.append((advance, cost))
    return out


def assert_same(got: Decision, want: Decision, where: str) -> None:
    assert (got.allowed, got.limit, got.remaining, got.policy) == (
        want.allowed,
        want.limit,
        want.remaining,
        want.policy,
    ), f"{where}: {got!r} != {want!r}"
    for name in ("retry_after", "reset_after", "delay"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1e-6), (
            f"{where}: {name} {got!r} != {want!r}"
        )
    assert len(got.details) == len(want.details), where


@pytest.mark.parametrize("start", [1_000_000.0, EPOCH], ids=["small_clock", "epoch"])
@pytest.mark.parametrize("limits", LIMIT_SETS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_trace_matches_reference(store, algorithm, limits, start):
    clock = FakeClock(start)
    subject = RateLimiter(LIMIT_SETS[limits], algorithm=algorithm, store=store, clock=clock)
    reference = RateLimiter(
        LIMIT_SETS[limits], algorithm=algorithm, store=MemoryStore(), clock=clock
    )
    k = key()
    for i, (advance, cost) in enumerate(trace(hash((algorithm, limits)) % 1000)):
        clock.advance(advance)
        if i % 7 == 3:
            assert_same(subject.peek(k, cost), reference.peek(k, cost), f"peek {i}")
        assert_same(subject.hit(k, cost), reference.hit(k, cost), f"step {i} cost {cost}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_async_trace_matches_reference(async_store, algorithm):
    clock = FakeClock(1_000_000.0)
    limits = LIMIT_SETS["multi"]
    subject = AsyncRateLimiter(limits, algorithm=algorithm, store=async_store, clock=clock)
    reference = RateLimiter(limits, algorithm=algorithm, clock=clock)
    k = key()
    for i, (advance, cost) in enumerate(trace(7, steps=30)):
        clock.advance(advance)
        assert_same(await subject.hit(k, cost), reference.hit(k, cost), f"step {i}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_peek_changes_nothing(store, algorithm):
    clock = FakeClock()
    limiter = RateLimiter("3/second", algorithm=algorithm, store=store, clock=clock)
    k = key()
    limiter.hit(k)
    before = limiter.peek(k)
    for _ in range(10):
        assert limiter.peek(k) == before
    assert before.allowed and before.remaining == 1
    assert [limiter.hit(k).allowed for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_multi_limit_all_or_nothing(store, algorithm):
    clock = FakeClock()
    limiter = RateLimiter("2/second;3/minute", algorithm=algorithm, store=store, clock=clock)
    k = key()
    assert [limiter.hit(k).allowed for _ in range(3)] == [True, True, False]
    denied = limiter.hit(k)
    assert denied.policy == Limit(2, per=1)
    # the denial consumed nothing from the minute limit: one more fits two seconds later
    clock.advance(2)
    assert limiter.hit(k).allowed
    clock.advance(2)
    denied = limiter.hit(k)
    assert not denied.allowed and denied.policy == Limit(3, per=60)
    assert [d.policy for d in denied.details] == [Limit(2, per=1), Limit(3, per=60)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_remaining_is_the_largest_cost_that_passes_at_todays_unix_time(store, algorithm):
    """Limit(5, per=1), two hits at t=1700000040.0 reported remaining=2 for GCRA and the leaky
    bucket, yet a hit of cost 3 passed."""
    clock = FakeClock(1_700_000_040.0)
    limiter = RateLimiter(Limit(5, per=1, burst=7), algorithm=algorithm, store=store, clock=clock)
    k = key()
    rng = random.Random(algorithm)
    for i in range(25):
        clock.advance(rng.choice([0.0, 0.0, 2.4e-7, 0.01, 0.13, 0.4]))
        d = limiter.hit(k, rng.choice([1, 1, 2, 3, 0.5]))
        assert limiter.peek(k, cost=d.remaining).allowed, (i, d)
        assert not limiter.peek(k, cost=d.remaining + 1).allowed, (i, d)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_drained_fast_limit_at_a_frozen_clock_admits_nothing_more(store, algorithm):
    """At 10**6 per second the admission slack (1 µs of refill) was a whole unit, granted again
    on every hit: a drained token bucket admitted every one of 2000 extra hits."""
    for start in (1_000_000.0, EPOCH):
        clock = FakeClock(start)
        limiter = RateLimiter(
            Limit(1_000_000, per=1), algorithm=algorithm, store=store, clock=clock
        )
        k = key()
        assert limiter.hit(k, cost=1_000_000).allowed
        assert not any(limiter.hit(k).allowed for _ in range(20)), start
        assert limiter.peek(k, cost=0).remaining == 0


LARGEST = [
    Limit(MAX_AMOUNT, per=MAX_PERIOD, burst=MAX_AMOUNT),  # 2**53 units per 10 years
    Limit(MAX_AMOUNT, per=MIN_PERIOD),  # 2**53 units per millisecond
    Limit(1, per=MAX_PERIOD),
    Limit(1, per=MIN_PERIOD),
]


@pytest.mark.parametrize("limit", LARGEST, ids=str)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_extreme_limits_work_on_every_store(store, algorithm, limit):
    """The largest amounts and longest and shortest periods a Limit accepts are held exactly:
    no raw driver error, no overflowed TTL, no remaining of -2**63."""
    clock = FakeClock(EPOCH)
    subject = RateLimiter(limit, algorithm=algorithm, store=store, clock=clock)
    reference = RateLimiter(limit, algorithm=algorithm, store=MemoryStore(), clock=clock)
    k = key()
    full = limit.capacity if algorithm in ("token_bucket", "gcra", "leaky_bucket") else limit.amount
    first = subject.hit(k)
    assert_same(first, reference.hit(k), "first hit")
    assert first.allowed and first.remaining == full - 1
    for i, cost in enumerate([full - 1, 1, 0]):
        assert_same(subject.hit(k, cost), reference.hit(k, cost), f"step {i} cost {cost}")
    clock.advance(limit.per / 2)
    assert_same(subject.peek(k), reference.peek(k), "half a period later")
    clock.advance(2 * limit.per)
    assert_same(subject.hit(k), reference.hit(k), "after the period")


def test_reset_and_key_isolation(store):
    clock = FakeClock()
    limiter = RateLimiter("1/minute", store=store, clock=clock)
    base = key()
    odd_keys = [base, base + ":", base + "{x}", base + " é ☃", base + "\x00", base + "*" * 5000]
    for k in odd_keys:
        assert limiter.hit(k).allowed, k
    for k in odd_keys:
        assert not limiter.hit(k).allowed, k
    limiter.reset(odd_keys[0])
    assert limiter.hit(odd_keys[0]).allowed
    assert not limiter.hit(odd_keys[1]).allowed


def test_same_limit_shares_budget_across_limiters(store):
    clock = FakeClock()
    a = RateLimiter("2/minute", store=store, clock=clock)
    b = RateLimiter("2/minute", store=store, clock=clock)
    other = RateLimiter("2/minute", algorithm="fixed_window", store=store, clock=clock)
    k = key()
    assert a.hit(k).allowed and b.hit(k).allowed
    assert not a.hit(k).allowed
    assert other.hit(k).allowed  # another algorithm keeps its own state


def test_leases(store):
    clock = FakeClock()
    k = key()
    assert store.acquire_lease(k, "a", 2, 30, clock()) == 0
    assert store.acquire_lease(k, "b", 2, 30, clock()) == 0
    wait = store.acquire_lease(k, "c", 2, 30, clock())
    assert wait == pytest.approx(30)
    store.release_lease(k, "a", clock())
    assert store.acquire_lease(k, "c", 2, 30, clock()) == 0
    clock.advance(10)
    assert store.acquire_lease(k, "d", 2, 30, clock()) == pytest.approx(20)
    clock.advance(20)  # a, b's lease ran out: a crashed holder frees its slot
    assert store.acquire_lease(k, "d", 2, 30, clock()) == 0


def test_concurrency_cap_through_limiter(store):
    clock = FakeClock()
    limiter = RateLimiter("100/second", store=store, clock=clock, max_concurrent=1, lease_ttl=5)
    k = key()
    with limiter.acquire(k):
        assert store.acquire_lease(k, "probe", 1, 5, clock()) > 0
    assert store.acquire_lease(k, "probe", 1, 5, clock()) == 0


def test_threads_admit_exactly_the_limit(store):
    limiter = RateLimiter("200/day", store=store)
    k = key()
    admitted = []

    def worker() -> None:
        admitted.append(sum(limiter.hit(k).allowed for _ in range(100)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 200


async def test_async_tasks_admit_exactly_the_limit(async_store):
    import asyncio

    limiter = AsyncRateLimiter("150/day", store=async_store)
    k = key()
    results = await asyncio.gather(*(limiter.hit(k) for _ in range(400)))
    assert sum(d.allowed for d in results) == 150


def test_health_check(store):
    store.ping()


def test_shadow_mode_and_candidate_limits_on_every_store(store):
    """Shadow mode never denies yet consumes like enforcing; candidate limits keep their own
    state and only count would-be denials."""
    clock = FakeClock(1_700_000_040.0)
    k = key()
    shadow = RateLimiter("3/minute", shadow=True, store=store, clock=clock)
    reference = RateLimiter("3/minute", store=MemoryStore(), clock=clock)
    got = [shadow.hit(k) for _ in range(5)]
    want = [reference.hit(k) for _ in range(5)]
    assert all(got) and [d.remaining for d in got] == [d.remaining for d in want]
    assert shadow.metrics().shadow_denied == 2
    k = key()
    candidate = RateLimiter("5/minute", shadow_limits="2/minute", store=store, clock=clock)
    assert [bool(candidate.hit(k)) for _ in range(6)] == [True] * 5 + [False]
    metrics = candidate.metrics()
    assert (metrics.allowed, metrics.shadow_denied, metrics.denied) == (2, 3, 1)
    assert RateLimiter("2/minute", store=store, clock=clock).hit(k)  # not the candidate's state


async def test_async_shadow_mode_on_every_store(async_store):
    clock = FakeClock(1_700_000_040.0)
    shadow = AsyncRateLimiter("2/minute", shadow=True, store=async_store, clock=clock)
    k = key()
    assert all([await shadow.hit(k) for _ in range(4)])
    assert shadow.metrics().shadow_denied == 2
