"""Token bucket: starts full with ``capacity`` tokens, refills at ``rate``; a hit of cost c passes
iff at least c tokens are there (within the float slack of :mod:`ratekeeper.algorithms.base`).
State: ``(tokens, last_refill_time)``. Tokens may be below zero by at most the slack: a hit
admitted within the slack leaves that debt, so the slack is granted once, not once per hit."""

from __future__ import annotations

from ratekeeper.algorithms.base import EPS_CLOCK, EPS_UNITS, INF, MAX_CLOCK_SLACK, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit


class TokenBucket(Algorithm):
    name = "token_bucket"

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        capacity = limit.capacity
        rate = limit.rate
        if state is None:
            tokens, last = float(capacity), now
        else:
            tokens, last = state
            if now > last:  # a clock stepping backwards refills nothing
                refilled = tokens + (now - last) * rate
                # min()/max() spelled out: the same result without a builtin call per request
                tokens = refilled if refilled < capacity else capacity
                last = now
        # What may be taken: the tokens plus the float slack (abs(now) and min() spelled out); a
        # cost of 0 always passes. `remaining` is computed from the new state exactly as the next
        # admission at this instant will be, so it is the largest cost that passes.
        slack = rate * (now if now >= 0.0 else -now) * EPS_CLOCK
        slack = EPS_UNITS + (slack if slack < MAX_CLOCK_SLACK else MAX_CLOCK_SLACK)
        available = tokens + slack
        if cost <= available or not cost:
            tokens -= cost
            available = tokens + slack
            return (tokens, last), Decision(
                True,
                limit.amount,
                int(available) if available > 0.0 else 0,
                (capacity - tokens) / rate,
                0.0,
                0.0,
                limit,
            )
        retry = INF if cost > capacity else (cost - tokens) / rate
        return state, Decision(
            False,
            limit.amount,
            int(available) if available > 0.0 else 0,
            (capacity - tokens) / rate,
            retry,
            0.0,
            limit,
        )

    def horizon(self, limit: Limit) -> float:
        return limit.capacity / limit.rate

    def charge(self, state: State, now: float, cost: float, limit: Limit) -> State:
        tokens, last = _refilled(state, now, limit)
        return (tokens - cost, last)

    def refund(self, state: State, now: float, amount: float, limit: Limit, at: float) -> State:
        if state is None:  # full: nothing to give back
            return None
        tokens, last = _refilled(state, now, limit)
        tokens += amount
        capacity = float(limit.capacity)
        return (tokens if tokens < capacity else capacity, last)


def _refilled(state: State, now: float, limit: Limit) -> tuple[float, float]:
    """The bucket at ``now``: the refill step of `TokenBucket.apply`."""
    capacity = float(limit.capacity)
    if state is None:
        return capacity, now
    tokens, last = state
    if now > last:
        refilled = tokens + (now - last) * limit.rate
        return (refilled if refilled < capacity else capacity), now
    return tokens, last
