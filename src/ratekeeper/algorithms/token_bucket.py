"""Token bucket: starts full with ``capacity`` tokens, refills at ``rate``; a hit of cost c passes
iff at least c tokens are there. State: ``(tokens, last_refill_time)``."""

from __future__ import annotations

from ratekeeper.algorithms.base import EPS_TIME, INF, Algorithm, State
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
        if cost <= tokens + rate * EPS_TIME:
            tokens -= cost
            if tokens < 0.0:
                tokens = 0.0
            return (tokens, last), Decision(
                True,
                limit.amount,
                int(tokens + 1e-9),
                (capacity - tokens) / rate,
                0.0,
                0.0,
                limit,
            )
        retry = INF if cost > capacity else (cost - tokens) / rate
        return state, Decision(
            False, limit.amount, int(tokens + 1e-9), (capacity - tokens) / rate, retry, 0.0, limit
        )

    def horizon(self, limit: Limit) -> float:
        return limit.capacity / limit.rate
