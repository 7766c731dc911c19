"""Fixed window: windows ``[k*P, (k+1)*P)`` aligned on the clock; a hit passes iff
``count + cost <= amount`` (within :data:`~ratekeeper.algorithms.base.EPS_UNITS`). State:
``(k, count)``, k the window index as a whole float."""

from __future__ import annotations

from ratekeeper.algorithms.base import EPS_TIME, EPS_UNITS, INF, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit


class FixedWindow(Algorithm):
    name = "fixed_window"

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        per = limit.per
        amount = limit.amount
        k = (now + EPS_TIME) // per  # the window index, a whole float
        if state is None:
            count = 0.0
        else:
            last, count = state
            if last != k:
                if last > k:  # the clock stepped back: stay in the newer window
                    k = last
                else:
                    count = 0.0
        available = amount - count + EPS_UNITS
        if cost <= available or not cost:
            count += cost
            left = amount - count + EPS_UNITS  # what the next admission in this window sees
            return (k, count), Decision(
                True,
                amount,
                int(left) if left > 0.0 else 0,
                (k + 1) * per - now if count else 0.0,
                0.0,
                0.0,
                limit,
            )
        end = (k + 1) * per - now
        retry = INF if cost > amount else end
        return state, Decision(
            False,
            amount,
            int(available) if available > 0.0 else 0,
            end if count else 0.0,
            retry,
            0.0,
            limit,
        )

    def horizon(self, limit: Limit) -> float:
        return limit.per

    def size(self, limit: Limit) -> float:
        return float(limit.amount)

    def charge(self, state: State, now: float, cost: float, limit: Limit) -> State:
        k = (now + EPS_TIME) // limit.per
        if state is None:
            return (k, cost)
        last, count = state
        if last > k:  # the clock stepped back: stay in the newer window
            return (last, count + cost)
        return (k, (count if last == k else 0.0) + cost)

    def refund(self, state: State, now: float, amount: float, limit: Limit, at: float) -> State:
        if state is None or state[0] != (at + EPS_TIME) // limit.per:
            return state  # the window charged has ended: it no longer counts
        count = state[1] - amount
        return (state[0], count if count > 0.0 else 0.0)
