"""What every algorithm is: a pure transition ``(state, now, cost, limit) -> (state, Decision)``.

No clock, lock or I/O in here or in any algorithm module. A state is an immutable value (a tuple
or a float) that a store keeps per key and per limit; ``None`` means "never seen, or fully
replenished". A denial returns the very state it was given: nothing changes.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from ratekeeper.decision import Decision
from ratekeeper.limits import Limit

__all__ = ["EPS_CLOCK", "EPS_TIME", "EPS_UNITS", "INF", "MAX_CLOCK_SLACK", "Algorithm", "State"]

State: TypeAlias = Any
INF = float("inf")

# The float tolerances, named once. The Lua scripts (stores/redis/lua/prelude.lua) and the SQL
# functions (stores/postgres/schema.sql) use the same values under the same names.
#
# EPS_TIME, seconds: the window algorithms (fixed window, sliding window, sliding log) read the
# clock as `now + EPS_TIME` when placing a request in a window, so that a request made exactly
# `retry_after` later lands in the window it was told about despite the float step of the clock
# (2.4e-7 s at today's Unix time). It shifts boundaries; it never adds capacity.
EPS_TIME = 1e-6
# EPS_UNITS, units: every admission `cost <= available + slack` and every `remaining` allow this
# much, so that sums of fractional costs (0.1 + 0.2) do not deny by a rounding error. It is far
# below any meaningful cost, so a drained limit admits nothing more.
EPS_UNITS = 1e-9
# EPS_CLOCK, relative: a float clock reading t is only known to within |t| * EPS_CLOCK (one float
# step, 2**-52 relative). The algorithms that meter time (token bucket, GCRA, leaky bucket) add
# `rate * |now| * EPS_CLOCK` units, at most MAX_CLOCK_SLACK, to their slack, so a request made at
# `now + retry_after`, rounded by the clock, still passes. The slack is granted once, not per
# request: a state admitted within it carries it as a debt.
EPS_CLOCK = 2.0**-52
# MAX_CLOCK_SLACK, units: the clock's share of the slack never exceeds a quarter of a unit, so a
# drained limit admits nothing more at any rate, and `remaining` never exceeds the capacity (a
# quarter, unlike a half, never rounds a count up to the next whole number, even near 2**53).
# A clock reading rounds by at most half a step, so `now + retry_after` stays honest up to
# 2 million units per second at today's Unix time; above that one clock step is worth more than
# half a unit, and a request at exactly `now + retry_after` may be refused by a clock step (and
# told to retry a clock step later).
MAX_CLOCK_SLACK = 0.25


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

    def size(self, limit: Limit) -> float:
        """The units a full budget holds: the burst (buckets, GCRA) or the amount (windows).
        A priority class's share is a share of this."""
        return float(limit.capacity)

    def charge(self, state: State, now: float, cost: float, limit: Limit) -> State:
        """Consume ``cost`` units unconditionally (the cost already happened): the budget may go
        into debt, which later requests wait off. Returns the new state."""
        raise NotImplementedError

    def refund(self, state: State, now: float, amount: float, limit: Limit, at: float) -> State:
        """Give back ``amount`` units charged at time ``at``, as if they had never been consumed,
        as far as this algorithm can: never past the full budget, and for windows only while the
        window they were charged to still counts. Returns the new state."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<algorithm {self.name}>"
