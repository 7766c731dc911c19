"""Sliding log: the exact sum of costs in ``(now - P, now]``; a hit passes iff
``sum + cost <= amount``. State: a tuple of ``(time, cost)`` entries, oldest first. O(entries)."""

from __future__ import annotations

from ratekeeper.algorithms.base import EPS_TIME, INF, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit


class SlidingLog(Algorithm):
    name = "sliding_log"

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        per = limit.per
        amount = limit.amount
        cutoff = now + EPS_TIME - per  # entries at or before the cutoff have left the window
        entries = tuple(e for e in state if e[0] > cutoff) if state else ()
        used = sum(e[1] for e in entries)
        if used + cost <= amount:
            if cost:
                entries += ((now, cost),)
            reset = max(e[0] for e in entries) + per - now if entries else 0.0
            return entries or None, Decision(
                True, amount, int(amount - used - cost + 1e-9), reset, 0.0, 0.0, limit
            )
        if cost > amount:
            retry = INF
        else:
            freed = used + cost - amount  # this much must leave the window first
            retry = 0.0
            for when, spent in sorted(entries):
                freed -= spent
                if freed <= 1e-9:
                    retry = when + per - now
                    break
        reset = max(e[0] for e in entries) + per - now if entries else 0.0
        return state, Decision(
            False, amount, max(int(amount - used + 1e-9), 0), reset, max(retry, 0.0), 0.0, limit
        )

    def horizon(self, limit: Limit) -> float:
        return limit.per
