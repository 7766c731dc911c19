"""Property tests of the policies (issue 13): a chain never admits more than its tightest level
over any window, and a reservation committed at ``a`` leaves the same state as a hit of ``a``
wherever the algorithm can refund."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ratekeeper import Chain, Limit, RateLimiter
from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing import FakeClock

TOL = 1e-6  # seconds and units: float noise of a clock at 1e6 s
START = 1_000_000.0

steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0]),
        st.sampled_from([0.5, 1, 1, 2, 3]),
        st.sampled_from([0, 1, 2]),  # which user
    ),
    min_size=1,
    max_size=60,
)

BUCKET = Limit(4, per=2.0, burst=6)  # the global level: token bucket
LOG = Limit(3, per=2.0)  # per user: sliding log (an exact window)
WINDOW = Limit(5, per=3.0)  # per user: fixed window


@settings(max_examples=150, deadline=None)
@given(steps)
def test_a_chain_never_admits_more_than_any_level_allows(
    seq: list[tuple[float, float, int]],
) -> None:
    clock = FakeClock(START)
    store = MemoryStore()
    chain = Chain(
        RateLimiter(BUCKET, store=store, clock=clock),
        RateLimiter(LOG, algorithm="sliding_log", store=store, clock=clock),
        RateLimiter(WINDOW, algorithm="fixed_window", store=store, clock=clock),
    )
    admitted: list[tuple[float, float, int]] = []
    for advance, cost, user in seq:
        clock.advance(advance)
        if chain.hit("all", f"u{user}", f"u{user}", cost=cost):
            admitted.append((clock(), cost, user))
    # the global token bucket: over any interval, at most the burst plus what refills
    for i, (t0, _, _) in enumerate(admitted):
        total = 0.0
        for t, cost, _ in admitted[i:]:
            total += cost
            assert total <= BUCKET.capacity + (t - t0) * BUCKET.rate + TOL
    for user in range(3):
        mine = [(t, c) for t, c, u in admitted if u == user]
        for t, _ in mine:  # the sliding log: any window (t - per, t]
            assert sum(c for s, c in mine if t - LOG.per < s <= t) <= LOG.amount + TOL
        windows: dict[float, float] = {}
        for t, c in mine:  # the fixed window: each aligned window
            k = (t + 1e-6) // WINDOW.per
            windows[k] = windows.get(k, 0.0) + c
        assert all(total <= WINDOW.amount + TOL for total in windows.values())


@settings(max_examples=120, deadline=None)
@given(
    st.sampled_from(sorted(ALGORITHMS)),
    steps,
    st.sampled_from([1, 2, 3, 4]),
    st.sampled_from([0, 0.5, 1, 2]),
    st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5]),
)
def test_a_reservation_committed_at_a_is_a_hit_of_a(
    algorithm: str,
    before: list[tuple[float, float, int]],
    estimate: float,
    actual: float,
    later: float,
) -> None:
    assume(actual <= estimate)
    limit = Limit(6, per=2.0, burst=8)
    clock = FakeClock(START)
    reserved = RateLimiter(limit, algorithm=algorithm, store=MemoryStore(), clock=clock)
    plain = RateLimiter(limit, algorithm=algorithm, store=MemoryStore(), clock=clock)
    for advance, cost, _ in before:
        clock.advance(advance)
        assert reserved.hit("k", cost) == plain.hit("k", cost)
    r = reserved.reserve("k", cost=estimate)
    assume(r.decision.allowed)  # a denied reservation charged nothing: nothing to compare
    assert plain.hit("k", cost=actual)
    clock.advance(later)
    r.commit(actual)
    for cost in (0, 1, 2, 5, 8):
        got, want = reserved.peek("k", cost=cost), plain.peek("k", cost=cost)
        assert (got.allowed, got.remaining) == (want.allowed, want.remaining), (cost, got, want)
        assert got.retry_after == pytest.approx(want.retry_after, abs=TOL)
    clock.advance(0.7)
    got, want = reserved.hit("k", 2), plain.hit("k", 2)
    assert (got.allowed, got.remaining) == (want.allowed, want.remaining)
