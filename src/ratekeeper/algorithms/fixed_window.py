"""Fixed window: windows ``[k*P, (k+1)*P)`` aligned on the clock; a hit passes iff
``count + cost <= amount``. State: ``(k, count)``, k the window index as a whole float."""

from __future__ import annotations

from ratekeeper.algorithms.base import INF, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit


class FixedWindow(Algorithm):
    name = "fixed_window"

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        per = limit.per
        amount = limit.amount
        k = (now + 1e-6) // per  # the window index (EPS_TIME, inlined), a whole float
        if state is None:
            count = 0.0
        else:
            last, count = state
            if last != k:
                if last > k:  # the clock stepped back: stay in the newer window
                    k = last
                else:
                    count = 0.0
        after = count + cost
        if after <= amount:
            return (k, after), Decision(
                True,
                amount,
                int(amount - after + 1e-9),
                (k + 1) * per - now if after else 0.0,
                0.0,
                0.0,
                limit,
            )
        end = (k + 1) * per - now
        retry = INF if cost > amount else end
        return state, Decision(
            False, amount, int(amount - count + 1e-9), end if count else 0.0, retry, 0.0, limit
        )

    def horizon(self, limit: Limit) -> float:
        return limit.per
