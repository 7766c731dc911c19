"""GCRA and the leaky bucket, one piece of math.

Emission interval T = period / amount, theoretical arrival time TAT. A request of cost c passes iff
``max(TAT, now) + c*T - now <= capacity*T``, that is iff c is at most the room
``capacity - backlog / T`` (within the float slack of :mod:`ratekeeper.algorithms.base`); then TAT
grows by c*T. The leaky bucket is the same meter read as a queue of size ``capacity`` draining one
unit per T: an admitted request must wait ``max(TAT, now) - now`` (its ``delay``) so that requests
leave evenly spaced.

State: the TAT as an unevaluated sum ``(high, low)`` of two floats, ``low`` holding what rounding
``now + backlog`` to a float lost. At today's Unix time one float step is 2.4e-7 s, more than the
emission interval of a fast limit: a plain float TAT would drop most of each increment (admitting
too much) and make ``remaining`` disagree with what is admitted. The pair keeps the backlog exact
at any clock value. (A bare float, the state of older versions, reads as ``(tat, 0.0)``.)
"""

from __future__ import annotations

from ratekeeper.algorithms.base import EPS_CLOCK, EPS_UNITS, INF, MAX_CLOCK_SLACK, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit


def _backlog(state: State, now: float) -> float:
    """Seconds of emission still ahead of ``now``: ``max(TAT - now, 0)``."""
    if state is None:
        return 0.0
    if state.__class__ is tuple:
        high, low = state
    else:  # a float TAT, as older versions stored it
        high, low = state, 0.0
    backlog: float = (high - now) + low
    return backlog if backlog > 0.0 else 0.0


class GCRA(Algorithm):
    name = "gcra"
    shaping = False

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        interval = limit.interval
        capacity = limit.capacity
        if state.__class__ is tuple:  # _backlog(state, now) inlined for the common case
            high, low = state
            backlog = (high - now) + low
            if not backlog > 0.0:
                backlog = 0.0
        else:
            backlog = _backlog(state, now)
        # the float slack, as in the token bucket
        slack = limit.rate * (now if now >= 0.0 else -now) * EPS_CLOCK
        slack = EPS_UNITS + (slack if slack < MAX_CLOCK_SLACK else MAX_CLOCK_SLACK)
        available = (capacity - backlog / interval) + slack
        if cost <= available or not cost:
            after = backlog + cost * interval
            # the new TAT, now + after, as an exact sum of two floats (Knuth's TwoSum)
            high = now + after
            part = high - now
            low = (now - (high - part)) + (after - part)
            # remaining: computed from the new state exactly as the next admission will be
            ahead = (high - now) + low  # _backlog((high, low), now), inlined
            left = (capacity - (ahead if ahead > 0.0 else 0.0) / interval) + slack
            return (high, low), Decision(
                True,
                limit.amount,
                int(left) if left > 0.0 else 0,
                after,
                0.0,
                backlog if self.shaping else 0.0,
                limit,
            )
        retry = INF if cost > capacity else backlog + cost * interval - capacity * interval
        return state, Decision(
            False,
            limit.amount,
            int(available) if available > 0.0 else 0,
            backlog,
            retry,
            0.0,
            limit,
        )

    def horizon(self, limit: Limit) -> float:
        return limit.capacity * limit.interval

    def charge(self, state: State, now: float, cost: float, limit: Limit) -> State:
        return _tat(now, _backlog(state, now) + cost * limit.interval)

    def refund(self, state: State, now: float, amount: float, limit: Limit, at: float) -> State:
        if state is None:
            return None
        backlog = _backlog(state, now) - amount * limit.interval
        return _tat(now, backlog if backlog > 0.0 else 0.0)


def _tat(now: float, after: float) -> tuple[float, float]:
    """The TAT ``now + after`` as an exact sum of two floats (Knuth's TwoSum), as `GCRA.apply`
    keeps it."""
    high = now + after
    part = high - now
    return high, (now - (high - part)) + (after - part)


class LeakyBucket(GCRA):
    name = "leaky_bucket"
    shaping = True
