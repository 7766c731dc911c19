"""GCRA and the leaky bucket, one piece of math.

Emission interval T = period / amount, theoretical arrival time TAT. A request of cost c passes iff
``max(TAT, now) + c*T - now <= capacity*T``; then TAT grows by c*T. The leaky bucket is the same
meter read as a queue of size ``capacity`` draining one unit per T: an admitted request must wait
``max(TAT, now) - now`` (its ``delay``) so that requests leave evenly spaced. State: TAT (float).
"""

from __future__ import annotations

from ratekeeper.algorithms.base import EPS_TIME, INF, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit


class GCRA(Algorithm):
    name = "gcra"
    shaping = False

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        interval = limit.interval
        window = limit.capacity * interval
        backlog = state - now if state is not None and state > now else 0.0
        after = backlog + cost * interval
        if after <= window + EPS_TIME:
            remaining = int((window - after) / interval + 1e-9)
            delay = backlog if self.shaping else 0.0
            return now + after, Decision(
                True, limit.amount, remaining if remaining > 0 else 0, after, 0.0, delay, limit
            )
        retry = INF if cost > limit.capacity else after - window
        remaining = int((window - backlog) / interval + 1e-9)
        return state, Decision(False, limit.amount, remaining, backlog, retry, 0.0, limit)

    def horizon(self, limit: Limit) -> float:
        return limit.capacity * limit.interval


class LeakyBucket(GCRA):
    name = "leaky_bucket"
    shaping = True
