"""What a reservation is, without I/O: what was charged where and when, and which checks settle it.

``limiter.reserve(key, cost=estimate)`` charges the estimate like ``hit`` (and is denied like it).
Settling with the actual cost (``commit``) applies, in one atomic store operation: when the
actual is below what was charged, refunds of the difference (``REFUND`` checks, latest charge
first, each into the window it was charged to: the algorithm gives back what it can, never past
the full budget); when above, an unconditional charge of the extra (``CHARGE``: it already
happened, the budget may go into debt that later requests wait off). ``cancel()`` is
``commit(0)``. ``charge(more)`` counts units as they are used (tokens streaming in) and charges
at once whatever goes past what is charged so far; ``commit()`` without an argument settles at
that count. A denied reservation charged nothing: committing it charges the actual cost.

A reservation spans one level (a limiter) or several (a chain): amounts are one number for every
level or a sequence of one number per level.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from decimal import Decimal

from ratekeeper.algorithms import Rule
from ratekeeper.algorithms.checks import CHARGE, REFUND, Check
from ratekeeper.decision import Decision

__all__ = ["Amounts", "Ledger", "amounts"]

Amounts = float | Sequence[float]


def _amount(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        raise ValueError(f"{what} must be a number, got {type(value).__name__}: {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return number


def amounts(value: object, levels: int, what: str) -> list[float]:
    """One checked amount per level, from a number (every level) or a sequence."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return [_amount(value, what)] * levels
    if len(value) != levels:
        raise ValueError(f"{what} needs one number per level ({levels}), got {len(value)}")
    return [_amount(item, what) for item in value]


class Ledger:
    """The accounting of one reservation (see the module docstring)."""

    __slots__ = ("charges", "decision", "estimate", "levels", "settled", "used")

    def __init__(
        self,
        levels: Sequence[tuple[str, Rule]],
        estimate: list[float],
        decision: Decision,
        at: float,
    ) -> None:
        self.levels = list(levels)
        self.estimate = estimate
        self.decision = decision
        charged = decision.allowed and not decision.fallback
        # per level: (when, units) of every charge still standing
        self.charges: list[list[tuple[float, float]]] = [
            [(at, units)] if charged and units else [] for units in estimate
        ]
        self.used = [0.0] * len(self.levels)  # what charge() counted
        self.settled = False

    def charged(self) -> list[float]:
        return [sum(units for _, units in level) for level in self.charges]

    def _open(self) -> None:
        if self.settled:
            raise RuntimeError("this reservation is already settled (commit or cancel, once)")

    def charge_checks(self, more: object) -> list[tuple[int, Check]]:
        """``charge(more)``: count the units, and charge what goes past what is charged. Returns
        (level, check) pairs for the store, then `applied`."""
        self._open()
        extra = amounts(more, len(self.levels), "charge")
        for i, units in enumerate(extra):
            self.used[i] += units
        return [
            (i, Check(key, rule, used - have, CHARGE))
            for i, ((key, rule), used, have) in enumerate(
                zip(self.levels, self.used, self.charged(), strict=True)
            )
            if used > have
        ]

    def commit_checks(self, actual: object | None) -> list[tuple[int, Check]]:
        """``commit(actual)``: the checks that bring what is charged to ``actual`` (by default,
        what ``charge`` counted)."""
        self._open()
        target = list(self.used) if actual is None else amounts(actual, len(self.levels), "actual")
        return self._towards(target)

    def _towards(self, target: list[float]) -> list[tuple[int, Check]]:
        checks = []
        for i, ((key, rule), have, want) in enumerate(
            zip(self.levels, self.charged(), target, strict=True)
        ):
            if want > have:
                checks.append((i, Check(key, rule, want - have, CHARGE)))
                continue
            give = have - want
            for at, units in reversed(self.charges[i]):  # the latest charge first
                if give <= 0:
                    break
                part = units if units < give else give
                checks.append((i, Check(key, rule, part, REFUND, at=at)))
                give -= part
        return checks

    def applied(self, checks: Sequence[tuple[int, Check]], now: float) -> None:
        """Record ``checks`` as applied by the store at ``now``."""
        for i, check in checks:
            level = self.charges[i]
            if check.mode == CHARGE:
                level.append((now, check.cost))
                continue
            for j in range(len(level) - 1, -1, -1):  # the refunded charge
                at, units = level[j]
                if at == check.at:
                    if units > check.cost:
                        level[j] = (at, units - check.cost)
                    else:
                        del level[j]
                    break
