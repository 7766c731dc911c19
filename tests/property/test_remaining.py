"""`remaining` is exactly the largest cost that would pass, at any clock value: at today's Unix
time a float's step is 2.4e-7 s, and GCRA's TAT, the leaky bucket's queue end and the token
bucket's refill time are absolute times. And a limit drained at a frozen clock admits nothing
more, however fast its rate."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ratekeeper import Limit
from ratekeeper.algorithms import ALGORITHMS, evaluate
from ratekeeper.decision import Decision

EPOCH = 1_700_000_000.0

limits = st.builds(
    Limit,
    st.integers(1, 50) | st.sampled_from([1000, 10**6, 2**40]),
    per=st.sampled_from([0.001, 0.3, 1.0, 2.5, 60.0, 86400.0]),
    burst=st.none() | st.integers(1, 80),
).filter(lambda limit: limit.capacity * limit.interval <= 10 * 365 * 86400)

steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 2.4e-7, 1e-6, 1e-3, 0.01, 0.1, 0.7, 3.0, -0.05]),
        st.sampled_from([0, 1, 1, 1, 2, 3, 0.5, 0.1, 7, 40]),
    ),
    min_size=1,
    max_size=60,
)


def check_remaining(algorithm: str, limit: Limit, state: Any, now: float, d: Decision) -> None:
    """peek(cost=remaining) passes and peek(cost=remaining + 1) does not."""
    fits = ALGORITHMS[algorithm].apply(state, now, d.remaining, limit)[1]
    assert fits.allowed, (algorithm, limit, now, d)
    over = ALGORITHMS[algorithm].apply(state, now, d.remaining + 1, limit)[1]
    assert not over.allowed, (algorithm, limit, now, d)
    # and remaining is what a peek of cost 0 reports
    assert ALGORITHMS[algorithm].apply(state, now, 0, limit)[1].remaining == d.remaining


@settings(max_examples=300, deadline=None)
@given(
    algorithm=st.sampled_from(sorted(ALGORITHMS)),
    limit=limits,
    start=st.floats(0.0, 1.0),
    seq=steps,
)
def test_remaining_is_the_largest_cost_that_passes_at_epoch_times(algorithm, limit, start, seq):
    now = EPOCH + start
    state = None
    for advance, cost in seq:
        now += advance
        new, d = evaluate(ALGORITHMS[algorithm], [limit], [state], now, cost)
        if new is not None:
            state = new[0]
        check_remaining(algorithm, limit, state, now, d)


@settings(max_examples=100, deadline=None)
@given(
    algorithm=st.sampled_from(sorted(ALGORITHMS)),
    pair=st.lists(limits, min_size=2, max_size=3),
    seq=steps,
)
def test_remaining_of_an_admission_over_several_limits(algorithm, pair, seq):
    """After an admission, the least remaining of the limits is what the next request may use."""
    now = EPOCH
    states: list[Any] = [None] * len(pair)
    for advance, cost in seq:
        now += advance
        new, d = evaluate(ALGORITHMS[algorithm], pair, states, now, cost)
        if new is None:
            continue
        states = new
        assert evaluate(ALGORITHMS[algorithm], pair, states, now, d.remaining)[1].allowed
        assert not evaluate(ALGORITHMS[algorithm], pair, states, now, d.remaining + 1)[1].allowed
