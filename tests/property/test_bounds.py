"""Property tests: each algorithm never admits more than it promises, denials and peeks change
nothing, whatever the sequence of (time advance, cost)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ratekeeper import Limit, RateLimiter
from ratekeeper.algorithms import ALGORITHMS, evaluate
from ratekeeper.testing import FakeClock

LIMIT = Limit(5, per=2.0, burst=7)
WINDOW_LIMIT = Limit(5, per=2.0)
TOL = 1e-6

steps = st.lists(
    st.tuples(
        st.one_of(
            st.just(0.0),
            st.floats(min_value=0.0, max_value=3.0, allow_nan=False, allow_infinity=False),
        ),
        st.sampled_from([0, 0.5, 1, 1, 1, 2, 3, 8]),
    ),
    min_size=1,
    max_size=80,
)


def run(algorithm: str, limit: Limit, seq: list[tuple[float, float]]):
    clock = FakeClock(1_000_000.0)
    limiter = RateLimiter(limit, algorithm=algorithm, clock=clock)
    admitted = []
    for advance, cost in seq:
        clock.advance(advance)
        if limiter.hit("k", cost).allowed and cost:
            admitted.append((clock(), cost))
    return admitted


def max_in_any_interval(admitted, rate_bound):
    """Check sum(costs in [t_i, t_j]) <= bound(t_j - t_i) for every pair."""
    for i in range(len(admitted)):
        total = 0.0
        for j in range(i, len(admitted)):
            total += admitted[j][1]
            assert total <= rate_bound(admitted[j][0] - admitted[i][0]) + TOL, (i, j)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_token_bucket_gcra_leaky_admit_at_most_burst_plus_rate_times_t(seq):
    for algorithm in ("token_bucket", "gcra", "leaky_bucket"):
        admitted = run(algorithm, LIMIT, seq)
        max_in_any_interval(admitted, lambda t: LIMIT.capacity + LIMIT.rate * t + 1e-5)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_fixed_and_sliding_window_at_most_limit_per_window(seq):
    for algorithm in ("fixed_window", "sliding_window"):
        per_window: dict[int, float] = {}
        for when, cost in run(algorithm, WINDOW_LIMIT, seq):
            k = math.floor((when + 1e-6) / WINDOW_LIMIT.per)
            per_window[k] = per_window.get(k, 0) + cost
        assert all(v <= WINDOW_LIMIT.amount + TOL for v in per_window.values()), per_window


@settings(max_examples=150, deadline=None)
@given(steps)
def test_sliding_log_at_most_limit_in_any_window_of_length_p(seq):
    admitted = run("sliding_log", WINDOW_LIMIT, seq)
    for i in range(len(admitted)):
        end = admitted[i][0]
        inside = sum(c for t, c in admitted if end - WINDOW_LIMIT.per < t <= end)
        assert inside <= WINDOW_LIMIT.amount + TOL


@settings(max_examples=100, deadline=None)
@given(steps)
def test_denials_never_change_state(seq):
    limits = (Limit(3, per=1.0), Limit(6, per=5.0))
    for algorithm in ALGORITHMS.values():
        states: list[object] = [None, None]
        now = 1_000_000.0
        for advance, cost in seq:
            now += advance
            new, decision = evaluate(algorithm, limits, states, now, cost)
            if decision.allowed:
                assert new is not None
                states = new
            else:
                assert new is None  # a multi-limit denial writes nothing
            for state, limit in zip(states, limits, strict=True):
                single, d = algorithm.apply(state, now, cost, limit)
                if not d.allowed:
                    assert single is state


@settings(max_examples=100, deadline=None)
@given(steps, st.lists(st.booleans(), min_size=80, max_size=80))
def test_peek_never_changes_state(seq, peeks):
    for algorithm in ALGORITHMS:
        clock = FakeClock()
        plain = RateLimiter("3/second;10/minute", algorithm=algorithm, clock=clock)
        peeking = RateLimiter("3/second;10/minute", algorithm=algorithm, clock=clock)
        for (advance, cost), peek in zip(seq, peeks, strict=False):
            clock.advance(advance)
            if peek:
                p = peeking.peek("k", cost)
                assert p == peeking.peek("k", cost)
            a, b = plain.hit("k", cost), peeking.hit("k", cost)
            assert a == b
            if peek:
                assert p == b


@settings(max_examples=100, deadline=None)
@given(steps)
def test_retry_after_is_honest(seq):
    """A denied request retried exactly retry_after later passes (absent other traffic)."""
    for algorithm in ALGORITHMS:
        clock = FakeClock()
        limiter = RateLimiter(LIMIT, algorithm=algorithm, clock=clock)
        for advance, cost in seq:
            clock.advance(advance)
            d = limiter.hit("k", cost)
            if not d.allowed and math.isfinite(d.retry_after):
                probe = FakeClock(clock())
                twin = RateLimiter(LIMIT, algorithm=algorithm, store=limiter.store, clock=probe)
                probe.advance(d.retry_after)
                assert twin.peek("k", cost).allowed, (algorithm, d)
