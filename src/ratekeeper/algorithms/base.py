"""What every algorithm is: a pure transition ``(state, now, cost, limit) -> (state, Decision)``.

No clock, lock or I/O in here or in any algorithm module. A state is an immutable value (a tuple
or a float) that a store keeps per key and per limit; ``None`` means "never seen, or fully
replenished". A denial returns the very state it was given: nothing changes.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from ratekeeper.decision import Decision
from ratekeeper.limits import Limit

__all__ = ["EPS_TIME", "INF", "Algorithm", "State"]

State: TypeAlias = Any
INF = float("inf")
# Tolerance, in seconds, for comparisons against the clock. Timestamps near 1.7e9 s carry about
# 2.4e-7 s of float noise, so a request made exactly `retry_after` later must not fail by a hair.
EPS_TIME = 1e-6


class Algorithm:
    """Base of the algorithm objects registered in :mod:`ratekeeper.algorithms`."""

    name: str = ""

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        """Decide one request of ``cost`` units at time ``now``; return the new state."""
        raise NotImplementedError

    def horizon(self, limit: Limit) -> float:
        """Seconds after its last write by which any state of ``limit`` is fully replenished.

        A store may forget a key that has not been written for this long.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<algorithm {self.name}>"
