"""The store conformance suite, for authors of stores (etcd, memcached, your company's own).

Subclass `StoreConformance` in a test module, name the subclass ``Test...`` and say how to build
your store; pytest collects every check below against it::

    from ratekeeper.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        def make_store(self):
            return MyStore("etcd://127.0.0.1:2379", trust_caller_clock=True)

        def make_async_store(self):          # optional: the asyncio twin
            return AsyncMyStore("etcd://127.0.0.1:2379", trust_caller_clock=True)

The checks replay traces on a `FakeClock` and compare every decision, field by field, with the
pure reference (the memory store under the same clock), then check peek, all-or-nothing multiple
limits, reset, key isolation, leases, shadow mode, extreme limits and exact admission under
threads and asyncio tasks. So the store must use the ``now`` it is handed: a store that reads a
server clock needs a switch to trust the caller's clock in tests. Each check builds a fresh store
(``make_store`` is called once per test, ``close()`` after) and uses random keys, so a shared server
needs no cleaning. Async checks run their own event loop (no pytest-asyncio needed); without
``make_async_store`` they are skipped with that reason. ratekeeper runs this very class against its
memory store.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter
from ratekeeper.limits import MAX_AMOUNT, MAX_PERIOD, MIN_PERIOD, Limit
from ratekeeper.policies._async_chain import AsyncChain
from ratekeeper.policies._sync_chain import Chain
from ratekeeper.policies._sync_reservation import Reservation
from ratekeeper.stores import AsyncStore, Store
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing.clock import FakeClock

__all__ = ["LIMIT_SETS", "StoreConformance", "assert_same_decision"]

T = TypeVar("T")

LIMIT_SETS = {
    "single": [Limit(5, per=2)],
    "burst": [Limit(4, per=1, burst=6)],
    "multi": [Limit(3, per=1), Limit(7, per=10)],
    "repeated": [Limit(2, per=1), Limit(2, per=1)],  # one budget, however often it is written
}
# Today's Unix time: a float step of 2.4e-7 s, where absolute times (GCRA's TAT, the token
# bucket's refill time) carry noise that small test clocks never show.
EPOCH = 1_700_000_000.123456
SMALL_CLOCK = 1_000_000.0
# Seconds: how far a store's retry_after / reset_after / delay may differ from the reference
# (stores keep times in microseconds or milliseconds-with-fraction).
TIME_TOLERANCE = 1e-6
LARGEST = [
    Limit(MAX_AMOUNT, per=MAX_PERIOD, burst=MAX_AMOUNT),  # 2**53 units per 10 years
    Limit(MAX_AMOUNT, per=MIN_PERIOD),  # 2**53 units per millisecond
    Limit(1, per=MAX_PERIOD),
    Limit(1, per=MIN_PERIOD),
]


def _key() -> str:
    return f"conformance:{uuid.uuid4().hex}"


def _trace(seed: int, steps: int = 60) -> list[tuple[float, float]]:
    """A reproducible walk: (seconds to advance, cost) pairs, zero-cost and oversized hits too."""
    rng = random.Random(seed)
    return [
        (
            rng.choice([0.0, 0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 1.7, 3.0]),
            rng.choice([1, 1, 1, 2, 0, 3, 0.5, 9]),
        )
        for _ in range(steps)
    ]


def _chain(store: Store, algorithm: str, clock: FakeClock) -> Chain:
    """Three levels on ``store``: a global level (``algorithm``, two limits, priority classes),
    a per-user token bucket, and a hybrid level on the user key (``algorithm`` again)."""
    return Chain(
        RateLimiter(
            LIMIT_SETS["multi"],
            algorithm=algorithm,
            store=store,
            clock=clock,
            priorities={"batch": 0.6},
        ),
        RateLimiter(Limit(5, per=2), store=store, clock=clock),
        RateLimiter(LIMIT_SETS["burst"], algorithm=algorithm, store=store, clock=clock),
    )


def _refuses_policies(store: Store | AsyncStore, expected: bool | None = None) -> bool:
    """A store without ``apply_checks`` (the operation chains, reservations and priority classes
    need) must refuse them with a clear `ConfigError` when a chain or a classed limiter is built;
    True when it does (then the policy checks have nothing more to check). ``expected``: whether
    the store must have ``apply_checks`` (None: either way)."""
    has = callable(getattr(store, "apply_checks", None))
    if expected is not None:
        assert has == expected, (
            f"{type(store).__name__} {'has no' if expected else 'has an'} apply_checks, "
            f"but the suite's applies_checks is {expected}"
        )
    if has:
        return False
    kind: Any = AsyncRateLimiter if inspect.iscoroutinefunction(store.hit) else RateLimiter
    with pytest.raises(ConfigError, match="apply_checks"):
        kind("1/second", store=store, priorities={"batch": 0.5})
    return True


def _policy_trace(
    subject: Chain, reference: Chain, clock: FakeClock, seed: int, steps: int = 80
) -> None:
    """Replay one random walk of chain hits, peeks, priority hits and reservations (charged as
    they stream, committed below or above their estimate, cancelled) on both chains, comparing
    every decision."""
    rng = random.Random(seed)
    g = _key()
    users = [_key() for _ in range(3)]
    held: list[tuple[Reservation, Reservation]] = []
    for i in range(steps):
        clock.advance(rng.choice([0.0, 0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 1.7, 3.0]))
        u = rng.choice(users)
        keys = (g, u, u)
        cost = rng.choice([1, 1, 2, 0, 3, 0.5])
        action = rng.random()
        where = f"step {i}"
        if action < 0.45:
            priority = rng.choice([None, None, "batch"])
            got = subject.hit(*keys, cost=cost, priority=priority)
            want = reference.hit(*keys, cost=cost, priority=priority)
        elif action < 0.55:
            got, want = subject.peek(*keys, cost=cost), reference.peek(*keys, cost=cost)
        elif action < 0.75 or not held:
            pair = subject.reserve(*keys, cost=cost), reference.reserve(*keys, cost=cost)
            got, want = pair[0].decision, pair[1].decision
            held.append(pair)
        else:
            mine, theirs = held.pop(rng.randrange(len(held)))
            settle = rng.random()
            if settle < 0.3:
                more = rng.choice([1, 2, 0.5])
                mine.charge(more)
                theirs.charge(more)
                held.append((mine, theirs))
            elif settle < 0.5:
                mine.cancel()
                theirs.cancel()
            else:
                actual = rng.choice([0, 1, 2, 3, 6])
                mine.commit(actual)
                theirs.commit(actual)
            got, want = subject.peek(*keys, cost=0), reference.peek(*keys, cost=0)
        assert_same_decision(got, want, where)
        for a, b in zip(got.per_limit, want.per_limit, strict=True):
            assert_same_decision(a, b, f"{where}, {b.policy}")


def assert_same_decision(got: Decision, want: Decision, where: str) -> None:
    """``got`` and ``want`` agree exactly, times within `TIME_TOLERANCE`."""
    assert (got.allowed, got.limit, got.remaining, got.policy) == (
        want.allowed,
        want.limit,
        want.remaining,
        want.policy,
    ), f"{where}: {got!r} != {want!r}"
    for name in ("retry_after", "reset_after", "delay"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), abs=TIME_TOLERANCE), (
            f"{where}: {name} {got!r} != {want!r}"
        )
    assert len(got.details) == len(want.details), where


class StoreConformance:
    """Every behaviour a ratekeeper store must have. Override `make_store` (and
    `make_async_store` for the asyncio twin) in a ``Test...`` subclass."""

    #: Whether the store must apply several checks at once (``apply_checks``: chains,
    #: reservations, priority classes): True fails the policy checks of a store without it
    #: instead of checking that it refuses them; None lets the store's methods decide.
    applies_checks: bool | None = None

    def make_store(self) -> Store:
        """A new synchronous store that uses the ``now`` it is given."""
        raise NotImplementedError("override make_store() to return your store")

    def make_async_store(self) -> AsyncStore:
        """A new asyncio store (called inside the running event loop)."""
        raise NotImplementedError

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        """The fixture of the checks: a store from `make_store`, closed after the test."""
        made = self.make_store()
        yield made
        made.close()

    def run_async(self, check: Callable[[AsyncStore], Awaitable[T]]) -> T:
        """Run ``check(store)`` with a fresh asyncio store in a fresh event loop."""
        if type(self).make_async_store is StoreConformance.make_async_store:
            pytest.skip(f"{type(self).__name__} has no make_async_store()")

        async def run() -> T:
            made = self.make_async_store()
            try:
                return await check(made)
            finally:
                await made.close()

        return asyncio.run(run())

    # -- decisions match the pure reference ---------------------------------------------------

    @pytest.mark.parametrize("start", [SMALL_CLOCK, EPOCH], ids=["small_clock", "epoch"])
    @pytest.mark.parametrize("limits", LIMIT_SETS)
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_trace_matches_reference(
        self, store: Store, algorithm: str, limits: str, start: float
    ) -> None:
        clock = FakeClock(start)
        subject = RateLimiter(LIMIT_SETS[limits], algorithm=algorithm, store=store, clock=clock)
        reference = RateLimiter(
            LIMIT_SETS[limits], algorithm=algorithm, store=MemoryStore(), clock=clock
        )
        k = _key()
        for i, (advance, cost) in enumerate(_trace(hash((algorithm, limits)) % 1000)):
            clock.advance(advance)
            if i % 7 == 3:
                assert_same_decision(subject.peek(k, cost), reference.peek(k, cost), f"peek {i}")
            assert_same_decision(subject.hit(k, cost), reference.hit(k, cost), f"step {i}")

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_async_trace_matches_reference(self, algorithm: str) -> None:
        async def check(store: AsyncStore) -> None:
            clock = FakeClock(SMALL_CLOCK)
            limits = LIMIT_SETS["multi"]
            subject = AsyncRateLimiter(limits, algorithm=algorithm, store=store, clock=clock)
            reference = RateLimiter(limits, algorithm=algorithm, clock=clock)
            k = _key()
            for i, (advance, cost) in enumerate(_trace(7, steps=30)):
                clock.advance(advance)
                assert_same_decision(await subject.hit(k, cost), reference.hit(k, cost), f"{i}")

        self.run_async(check)

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_peek_changes_nothing(self, store: Store, algorithm: str) -> None:
        limiter = RateLimiter("3/second", algorithm=algorithm, store=store, clock=FakeClock())
        k = _key()
        limiter.hit(k)
        before = limiter.peek(k)
        for _ in range(10):
            assert limiter.peek(k) == before
        assert before.allowed and before.remaining == 1
        assert [limiter.hit(k).allowed for _ in range(3)] == [True, True, False]

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_multi_limit_all_or_nothing(self, store: Store, algorithm: str) -> None:
        clock = FakeClock()
        limiter = RateLimiter("2/second;3/minute", algorithm=algorithm, store=store, clock=clock)
        k = _key()
        assert [limiter.hit(k).allowed for _ in range(3)] == [True, True, False]
        assert limiter.hit(k).policy == Limit(2, per=1)
        clock.advance(2)  # the denials consumed nothing from the minute limit
        assert limiter.hit(k).allowed
        clock.advance(2)
        denied = limiter.hit(k)
        assert not denied.allowed and denied.policy == Limit(3, per=60)
        assert [d.policy for d in denied.details] == [Limit(2, per=1), Limit(3, per=60)]

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_remaining_is_the_largest_cost_that_passes(self, store: Store, algorithm: str) -> None:
        clock = FakeClock(1_700_000_040.0)
        limiter = RateLimiter(
            Limit(5, per=1, burst=7), algorithm=algorithm, store=store, clock=clock
        )
        k = _key()
        rng = random.Random(algorithm)
        for i in range(25):
            clock.advance(rng.choice([0.0, 0.0, 2.4e-7, 0.01, 0.13, 0.4]))
            d = limiter.hit(k, rng.choice([1, 1, 2, 3, 0.5]))
            assert limiter.peek(k, cost=d.remaining).allowed, (i, d)
            assert not limiter.peek(k, cost=d.remaining + 1).allowed, (i, d)

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_a_drained_fast_limit_at_a_frozen_clock_admits_nothing_more(
        self, store: Store, algorithm: str
    ) -> None:
        for start in (SMALL_CLOCK, EPOCH):
            limiter = RateLimiter(
                Limit(1_000_000, per=1), algorithm=algorithm, store=store, clock=FakeClock(start)
            )
            k = _key()
            assert limiter.hit(k, cost=1_000_000).allowed
            assert not any(limiter.hit(k).allowed for _ in range(20)), start
            assert limiter.peek(k, cost=0).remaining == 0

    @pytest.mark.parametrize("limit", LARGEST, ids=str)
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_the_extreme_limits_are_held_exactly(
        self, store: Store, algorithm: str, limit: Limit
    ) -> None:
        clock = FakeClock(EPOCH)
        subject = RateLimiter(limit, algorithm=algorithm, store=store, clock=clock)
        reference = RateLimiter(limit, algorithm=algorithm, store=MemoryStore(), clock=clock)
        k = _key()
        bucket = algorithm in ("token_bucket", "gcra", "leaky_bucket")
        full = limit.capacity if bucket else limit.amount
        first = subject.hit(k)
        assert_same_decision(first, reference.hit(k), "first hit")
        assert first.allowed and first.remaining == full - 1
        for i, cost in enumerate([full - 1, 1, 0]):
            assert_same_decision(subject.hit(k, cost), reference.hit(k, cost), f"step {i}")
        clock.advance(limit.per / 2)
        assert_same_decision(subject.peek(k), reference.peek(k), "half a period later")
        clock.advance(2 * limit.per)
        assert_same_decision(subject.hit(k), reference.hit(k), "after the period")

    # -- policies: chains, reservations, priorities (apply_checks) -------------------------------

    @pytest.mark.parametrize("start", [SMALL_CLOCK, EPOCH], ids=["small_clock", "epoch"])
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_policy_trace_matches_reference(
        self, store: Store, algorithm: str, start: float
    ) -> None:
        if _refuses_policies(store, self.applies_checks):
            return
        clock = FakeClock(start)
        subject = _chain(store, algorithm, clock)
        reference = _chain(MemoryStore(), algorithm, clock)
        _policy_trace(subject, reference, clock, seed=zlib.crc32(algorithm.encode()))

    def test_async_policies_match_reference(self) -> None:
        async def check(store: AsyncStore) -> None:
            if _refuses_policies(store, self.applies_checks):
                return
            clock = FakeClock(EPOCH)
            levels = [("sliding_log", "3/second"), ("gcra", "5/2s"), ("fixed_window", "4/second")]
            subject = AsyncChain(
                *(AsyncRateLimiter(lim, algorithm=a, store=store, clock=clock) for a, lim in levels)
            )
            memory = MemoryStore()
            reference = Chain(
                *(RateLimiter(lim, algorithm=a, store=memory, clock=clock) for a, lim in levels)
            )
            keys = (_key(), _key(), _key())
            for i, (advance, cost) in enumerate(_trace(11, steps=30)):
                clock.advance(advance)
                if i % 3:
                    got, want = await subject.hit(*keys, cost=cost), reference.hit(*keys, cost=cost)
                else:
                    mine = await subject.reserve(*keys, cost=cost)
                    theirs = reference.reserve(*keys, cost=cost)
                    assert_same_decision(mine.decision, theirs.decision, f"reserve {i}")
                    await mine.commit(cost / 2)
                    theirs.commit(cost / 2)
                    got, want = await subject.peek(*keys, cost=0), reference.peek(*keys, cost=0)
                assert_same_decision(got, want, f"step {i}")

        self.run_async(check)

    def test_chain_threads_admit_exactly_the_tightest_level(self, store: Store) -> None:
        if _refuses_policies(store, self.applies_checks):
            return
        pool = RateLimiter("60/day", store=store)
        member = RateLimiter("25/day", algorithm="fixed_window", store=store)
        chain = Chain(pool, member)
        g, users = _key(), [_key() for _ in range(3)]
        admitted: dict[str, int] = dict.fromkeys(users, 0)
        lock = threading.Lock()

        def worker(n: int) -> None:
            for i in range(30):
                u = users[(n + i) % 3]
                if chain.hit(g, u).allowed:
                    with lock:
                        admitted[u] += 1

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(admitted.values()) == 60 and max(admitted.values()) <= 25

    def test_async_chain_tasks_admit_exactly_the_tightest_level(self) -> None:
        async def check(store: AsyncStore) -> list[bool]:
            if _refuses_policies(store, self.applies_checks):
                return [True] * 40
            chain = AsyncChain(
                AsyncRateLimiter("100/day", store=store),
                AsyncRateLimiter("40/day", algorithm="sliding_window", store=store),
            )
            g, u = _key(), _key()
            results = await asyncio.gather(*(chain.hit(g, u) for _ in range(150)))
            return [d.allowed for d in results]

        assert sum(self.run_async(check)) == 40

    # -- penalties, adaptive limits, quota pools (apply_checks) --------------------------------

    def _refuses_more_policies(self, store: Store | AsyncStore) -> bool:
        """A store without ``apply_checks`` must refuse a `Penalty`, an `AdaptiveLimiter` and a
        `QuotaPool` with a clear `ConfigError` when they are built; True when it does."""
        from ratekeeper.policies import adaptive, penalty, quota

        if not _refuses_policies(store, self.applies_checks):
            return False
        asynchronous = inspect.iscoroutinefunction(store.hit)
        limiter: Any = AsyncRateLimiter if asynchronous else RateLimiter
        builds: list[Callable[[], object]] = [
            lambda: (penalty.AsyncPenalty if asynchronous else penalty.Penalty)(
                limiter("1/second", store=store), after=2, within=10, ban=5, max_ban=20
            ),
            lambda: (adaptive.AsyncAdaptiveLimiter if asynchronous else adaptive.AdaptiveLimiter)(
                min=1, max=5, store=store
            ),
            lambda: (quota.AsyncQuotaPool if asynchronous else quota.QuotaPool)(
                total_quota=10, window=60, store=store
            ),
        ]
        for build in builds:
            with pytest.raises(ConfigError, match="apply_checks"):
                build()
        return True

    @pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_log"])
    def test_penalty_matches_reference(self, store: Store, algorithm: str) -> None:
        from ratekeeper.policies.penalty import Penalty

        if self._refuses_more_policies(store):
            return
        clock = FakeClock(EPOCH)

        def build(on: Store) -> Penalty:
            limiter = RateLimiter("3/10s", algorithm=algorithm, store=on, clock=clock)
            return Penalty(limiter, after=2, within=5, ban=4, factor=3, max_ban=30, forget=60)

        subject, reference = build(store), build(MemoryStore())
        k = _key()
        # Two denials ban for 4 s, the next two for 12 s, then 30 s (capped)...
        for ban in (4.0, 12.0, 30.0):
            clock.advance(10.0)
            decisions = [subject.hit(k) for _ in range(5)]
            assert [d.allowed for d in decisions] == [True] * 3 + [False] * 2, ban
            assert subject.banned(k) == pytest.approx(ban, abs=TIME_TOLERANCE)
            assert decisions[-1].retry_after >= ban - TIME_TOLERANCE
            clock.advance(ban - 0.5)
            denied = subject.hit(k)  # ...during which nothing passes nor counts...
            assert not denied and denied.retry_after >= 0.5 - TIME_TOLERANCE
            assert subject.banned(k) == pytest.approx(0.5, abs=TIME_TOLERANCE)
            clock.advance(0.5)
            assert subject.banned(k) == 0.0
        subject.reset(k)  # ...until reset clears the budget, strikes, ban and offences
        assert [subject.hit(k).allowed for _ in range(5)] == [True] * 3 + [False] * 2
        assert subject.banned(k) == pytest.approx(4.0, abs=TIME_TOLERANCE)
        # A random walk decides as the reference does.
        rng = random.Random(algorithm)
        k = _key()
        for i in range(80):
            clock.advance(rng.choice([0.0, 0.0, 0.3, 1.0, 2.5, 6.0]))
            cost = rng.choice([1, 1, 2, 0.5])
            if i % 9 == 4:
                got, want = subject.peek(k, cost), reference.peek(k, cost)
            else:
                got, want = subject.hit(k, cost), reference.hit(k, cost)
            assert_same_decision(got, want, f"step {i}")
            assert subject.banned(k) == pytest.approx(reference.banned(k), abs=TIME_TOLERANCE)

    @pytest.mark.parametrize("algorithm", ["sliding_window", "fixed_window", "sliding_log"])
    def test_adaptive_limit_matches_reference(self, store: Store, algorithm: str) -> None:
        from ratekeeper.policies.adaptive import AdaptiveLimiter

        if self._refuses_more_policies(store):
            return
        clock = FakeClock(EPOCH)

        def build(on: Store) -> AdaptiveLimiter:
            return AdaptiveLimiter(
                min=2, max=12, per=1, algorithm=algorithm, store=on, clock=clock, latency=0.5
            )

        subject, reference, other = build(store), build(MemoryStore()), build(store)
        k = _key()
        assert subject.limit(k) == 12
        assert subject.record(k, ok=False) == 6  # halved once...
        assert other.record(k, ok=False) == 6  # ...per cooldown, whoever reports
        assert other.limit(k) == 6  # every instance on the store sees it
        clock.advance(1.0)
        assert [subject.hit(k).allowed for _ in range(8)] == [True] * 6 + [False] * 2
        assert other.record(k, latency=0.1) == 7 and subject.record(k, latency=2.0) == 3.5
        subject.reset(k)
        assert other.limit(k) == 12
        rng = random.Random(algorithm)
        k = _key()
        for i in range(80):
            clock.advance(rng.choice([0.0, 0.0, 0.1, 0.4, 1.0, 1.5]))
            action = rng.random()
            if action < 0.6:
                cost = rng.choice([1, 1, 2, 0.5])
                assert_same_decision(subject.hit(k, cost), reference.hit(k, cost), f"step {i}")
            else:
                ok, latency = rng.random() < 0.6, rng.choice([None, 0.2, 0.9])
                got, want = subject.record(k, ok, latency), reference.record(k, ok, latency)
                assert got == want, f"step {i}"
            assert subject.limit(k) == reference.limit(k), f"step {i}"

    @pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window"])
    def test_quota_pool_matches_reference(self, store: Store, algorithm: str) -> None:
        from ratekeeper.policies.quota import QuotaPool

        if self._refuses_more_policies(store):
            return
        clock = FakeClock(EPOCH)
        name = _key()

        def build(on: Store, borrow: float = 0.0) -> QuotaPool:
            return QuotaPool(
                total_quota=10,
                window=60,
                algorithm=algorithm,
                store=on,
                clock=clock,
                name=name + ("b" if borrow else ""),
                borrow=borrow or False,
            )

        subject, other = build(store), build(store)
        a, b, c = _key(), _key(), _key()
        assert not subject.hit(a) and subject.allocation(a) == 0  # no allocation, no use
        subject.allocate(a, 4)
        subject.allocate(b, 8)
        assert (other.allocation(a), other.allocation(b)) == (4, 8)  # kept in the store
        assert [other.hit(a).allowed for _ in range(6)] == [True] * 4 + [False] * 2
        denied = subject.hit(b, cost=7)  # b's 8 fit its allocation, not the pool's 6 left
        assert not denied and denied.policy == Limit(10, per=60)
        assert subject.hit(b, cost=6)
        subject.allocate(a, 0)
        assert other.allocation(a) == 0 and not other.hit(a, cost=0)
        lender, reference = build(store, borrow=0.8), build(MemoryStore(), borrow=0.8)
        for pool in (lender, reference):
            pool.allocate(a, 2)
            pool.allocate(c, 5)
        rng = random.Random(algorithm)
        for i in range(60):
            clock.advance(rng.choice([0.0, 0.0, 1.0, 7.0, 30.0]))
            member, cost = rng.choice([a, a, c, b]), rng.choice([1, 1, 2, 0.5])
            if i % 17 == 5:
                quota = rng.choice([0, 1, 3, 6])
                lender.allocate(member, quota)
                reference.allocate(member, quota)
            got, want = lender.hit(member, cost), reference.hit(member, cost)
            assert_same_decision(got, want, f"step {i}")

    def test_async_penalty_adaptive_and_quota_pool(self) -> None:
        from ratekeeper.policies.adaptive import AdaptiveLimiter, AsyncAdaptiveLimiter
        from ratekeeper.policies.penalty import AsyncPenalty, Penalty
        from ratekeeper.policies.quota import AsyncQuotaPool, QuotaPool

        async def check(store: AsyncStore) -> None:
            if self._refuses_more_policies(store):
                return
            clock = FakeClock(EPOCH)
            memory = MemoryStore()
            options: dict[str, Any] = {"after": 2, "within": 5, "ban": 4, "max_ban": 30}
            penalty = AsyncPenalty(AsyncRateLimiter("2/10s", store=store, clock=clock), **options)
            penalized = Penalty(RateLimiter("2/10s", store=memory, clock=clock), **options)
            adaptive = AsyncAdaptiveLimiter(min=1, max=6, store=store, clock=clock)
            adapted = AdaptiveLimiter(min=1, max=6, store=memory, clock=clock)
            pool = AsyncQuotaPool(total_quota=8, window=60, store=store, clock=clock, name=_key())
            pooled = QuotaPool(total_quota=8, window=60, store=memory, clock=clock)
            k = _key()
            await pool.allocate(k, 3)
            pooled.allocate(k, 3)
            for i, (advance, cost) in enumerate(_trace(5, steps=30)):
                clock.advance(advance)
                where = f"step {i}"
                assert_same_decision(await penalty.hit(k, cost), penalized.hit(k, cost), where)
                assert await penalty.banned(k) == pytest.approx(penalized.banned(k))
                ok = i % 4 != 1
                assert await adaptive.record(k, ok) == adapted.record(k, ok), where
                assert_same_decision(await adaptive.hit(k, cost), adapted.hit(k, cost), where)
                assert_same_decision(await pool.hit(k, cost), pooled.hit(k, cost), where)
            await penalty.reset(k)
            assert await penalty.banned(k) == 0.0

        self.run_async(check)

    # -- keys, reset, sharing -------------------------------------------------------------------

    def test_reset_and_key_isolation(self, store: Store) -> None:
        limiter = RateLimiter("1/minute", store=store, clock=FakeClock())
        base = _key()
        odd = [base, base + ":", base + "{x}", base + " é ☃", base + "\x00", base + "*" * 5000]
        for k in odd:
            assert limiter.hit(k).allowed, k
        for k in odd:
            assert not limiter.hit(k).allowed, k
        limiter.reset(odd[0])
        assert limiter.hit(odd[0]).allowed
        assert not limiter.hit(odd[1]).allowed

    def test_same_limit_shares_budget_across_limiters(self, store: Store) -> None:
        clock = FakeClock()
        a = RateLimiter("2/minute", store=store, clock=clock)
        b = RateLimiter("2/minute", store=store, clock=clock)
        other = RateLimiter("2/minute", algorithm="fixed_window", store=store, clock=clock)
        k = _key()
        assert a.hit(k).allowed and b.hit(k).allowed
        assert not a.hit(k).allowed
        assert other.hit(k).allowed  # another algorithm keeps its own state

    # -- concurrency leases ---------------------------------------------------------------------

    def test_leases(self, store: Store) -> None:
        clock = FakeClock()
        k = _key()
        assert store.acquire_lease(k, "a", 2, 30, clock()) == 0
        assert store.acquire_lease(k, "b", 2, 30, clock()) == 0
        assert store.acquire_lease(k, "c", 2, 30, clock()) == pytest.approx(30)
        store.release_lease(k, "a", clock())
        assert store.acquire_lease(k, "c", 2, 30, clock()) == 0
        clock.advance(10)
        assert store.acquire_lease(k, "d", 2, 30, clock()) == pytest.approx(20)
        clock.advance(20)  # a crashed holder's lease runs out and frees its slot
        assert store.acquire_lease(k, "d", 2, 30, clock()) == 0

    def test_concurrency_cap_through_limiter(self, store: Store) -> None:
        clock = FakeClock()
        limiter = RateLimiter("100/second", store=store, clock=clock, max_concurrent=1, lease_ttl=5)
        k = _key()
        with limiter.acquire(k):
            assert store.acquire_lease(k, "probe", 1, 5, clock()) > 0
        assert store.acquire_lease(k, "probe", 1, 5, clock()) == 0

    # -- exact under concurrency ----------------------------------------------------------------

    def test_threads_admit_exactly_the_limit(self, store: Store) -> None:
        limiter = RateLimiter("200/day", store=store)
        k = _key()
        admitted: list[int] = []

        def worker() -> None:
            admitted.append(sum(limiter.hit(k).allowed for _ in range(100)))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(admitted) == 200

    def test_async_tasks_admit_exactly_the_limit(self) -> None:
        async def check(store: AsyncStore) -> int:
            limiter = AsyncRateLimiter("150/day", store=store)
            k = _key()
            results = await asyncio.gather(*(limiter.hit(k) for _ in range(400)))
            return sum(d.allowed for d in results)

        assert self.run_async(check) == 150

    # -- health, shadow mode --------------------------------------------------------------------

    def test_health_check(self, store: Store) -> None:
        store.ping()

    def test_shadow_mode_and_candidate_limits(self, store: Store) -> None:
        clock = FakeClock(1_700_000_040.0)
        k = _key()
        shadow = RateLimiter("3/minute", shadow=True, store=store, clock=clock)
        reference = RateLimiter("3/minute", store=MemoryStore(), clock=clock)
        got = [shadow.hit(k) for _ in range(5)]
        want = [reference.hit(k) for _ in range(5)]
        assert all(got) and [d.remaining for d in got] == [d.remaining for d in want]
        assert shadow.metrics().shadow_denied == 2
        k = _key()
        candidate = RateLimiter("5/minute", shadow_limits="2/minute", store=store, clock=clock)
        assert [bool(candidate.hit(k)) for _ in range(6)] == [True] * 5 + [False]
        metrics = candidate.metrics()
        assert (metrics.allowed, metrics.shadow_denied, metrics.denied) == (2, 3, 1)
        assert RateLimiter("2/minute", store=store, clock=clock).hit(k)

    def test_async_shadow_mode(self) -> None:
        async def check(store: AsyncStore) -> Any:
            shadow = AsyncRateLimiter(
                "2/minute", shadow=True, store=store, clock=FakeClock(1_700_000_040.0)
            )
            k = _key()
            assert all([await shadow.hit(k) for _ in range(4)])
            return shadow.metrics().shadow_denied

        assert self.run_async(check) == 2
