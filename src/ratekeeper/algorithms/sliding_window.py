"""Sliding window counter: ``estimate = previous * (1 - elapsed/P) + current``; a hit passes iff
``estimate + cost <= amount`` (within :data:`~ratekeeper.algorithms.base.EPS_UNITS`).
State: ``(k, previous, current)`` with k the window index."""

from __future__ import annotations

from ratekeeper.algorithms.base import EPS_TIME, EPS_UNITS, INF, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit


class SlidingWindow(Algorithm):
    name = "sliding_window"

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        per = limit.per
        amount = limit.amount
        t = now + EPS_TIME
        k = int(t // per)
        prev = cur = 0.0
        if state is not None:
            sk, sprev, scur = state
            if sk == k:
                prev, cur = sprev, scur
            elif sk == k - 1:
                prev = scur
            elif sk > k:  # the clock stepped back: keep the newer windows, weight them fully
                k, prev, cur = state
        start = k * per
        # min(max(t - start, 0.0), per) and max(..., 0) below, without builtin calls
        elapsed = t - start
        if not elapsed > 0.0:
            elapsed = 0.0
        elif elapsed > per:
            elapsed = per
        weight = 1.0 - elapsed / per  # of the previous window's count
        available = amount - (prev * weight + cur) + EPS_UNITS
        if cost <= available or not cost:
            cur += cost
            left = amount - (prev * weight + cur) + EPS_UNITS  # what the next admission sees
            return (k, prev, cur), Decision(
                True,
                amount,
                int(left) if left > 0.0 else 0,
                _reset_after(start, per, now, prev, cur),
                0.0,
                0.0,
                limit,
            )
        if cost > amount:
            retry = INF
        elif prev and cur + cost <= amount:  # wait here until the previous window has decayed
            retry = start + per * (1.0 - (amount - cur - cost) / prev) - now
        else:  # wait into the next window, where the current count decays
            retry = start + per + per * (1.0 - (amount - cost) / cur) - now
        return state, Decision(
            False,
            amount,
            int(available) if available > 0.0 else 0,
            _reset_after(start, per, now, prev, cur),
            retry if retry > 0.0 else 0.0,
            0.0,
            limit,
        )

    def horizon(self, limit: Limit) -> float:
        return 2 * limit.per

    def size(self, limit: Limit) -> float:
        return float(limit.amount)

    def charge(self, state: State, now: float, cost: float, limit: Limit) -> State:
        k = int((now + EPS_TIME) // limit.per)
        prev = cur = 0.0
        if state is not None:
            sk, sprev, scur = state
            if sk == k:
                prev, cur = sprev, scur
            elif sk == k - 1:
                prev = scur
            elif sk > k:  # the clock stepped back: keep the newer windows
                k, prev, cur = state
        return (k, prev, cur + cost)

    def refund(self, state: State, now: float, amount: float, limit: Limit, at: float) -> State:
        if state is None:
            return None
        k, prev, cur = state
        charged = int((at + EPS_TIME) // limit.per)
        if k == charged:  # still the current window
            cur -= amount
            return (k, prev, cur if cur > 0.0 else 0.0)
        if k == charged + 1:  # now the previous window: it still counts, decaying
            prev -= amount
            return (k, prev if prev > 0.0 else 0.0, cur)
        return state  # the window charged no longer counts


def _reset_after(start: float, per: float, now: float, prev: float, cur: float) -> float:
    """Seconds until the estimate decays to zero: the current count weighs until the end of the
    next window, the previous one until the end of this window."""
    if cur:
        return start + 2 * per - now
    return start + per - now if prev else 0.0
