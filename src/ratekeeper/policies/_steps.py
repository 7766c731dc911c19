"""The store steps of the policies written as flows (`Penalty`, `AdaptiveLimiter`, `QuotaPool`).

Each policy's logic is written once, as a generator that yields store steps — ``apply`` (a list of
checks, all-or-nothing, `ratekeeper.algorithms.checks`) or ``reset`` (forget one key's state of a
rule) — and receives their results (a `StoreUnavailable` is thrown into it). `SyncSteps` and
`AsyncSteps` run a step on a synchronous or an asyncio store; with `ratekeeper._drive` they are the
only code that differs between a policy's two faces. No step is a new store operation: every
value a policy shares (a ban, a strike count, an adaptive limit, an allocation) is limiter state,
written and read with ``apply_checks`` and ``reset``.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import Any, TypeAlias, TypeVar

from ratekeeper.algorithms import Algorithm, Rule
from ratekeeper.algorithms.checks import Check, keep_of
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError
from ratekeeper.limits import Limit

__all__ = [
    "APPLY",
    "RESET",
    "AsyncSteps",
    "Flow",
    "Step",
    "SyncSteps",
    "apply",
    "reset",
    "number",
    "share_for",
    "with_limit",
]

APPLY, RESET = "apply", "reset"
Step: TypeAlias = tuple[str, tuple[Any, ...]]
T = TypeVar("T")
Flow: TypeAlias = Generator[Step, Any, T]


def apply(checks: Sequence[Check], now: float, write: bool = True) -> Step:
    """The step ``store.apply_checks(checks, now, write)`` (it answers an `Applied`)."""
    return APPLY, (list(checks), now, write)


def reset(key: str, rule: Rule) -> Step:
    """The step ``store.reset(key, rule)``."""
    return RESET, (key, rule)


class SyncSteps:
    """Runs the steps of a flow on a synchronous store."""

    store: Any

    def _run(self, step: Step) -> Any:
        kind, args = step
        if kind == APPLY:
            return self.store.apply_checks(*args)
        return self.store.reset(*args)


class AsyncSteps:
    """Runs the steps of a flow on an asyncio store."""

    store: Any

    async def _run(self, step: Step) -> Any:
        kind, args = step
        if kind == APPLY:
            return await self.store.apply_checks(*args)
        return await self.store.reset(*args)


def share_for(part: float, whole: Limit, algorithm: Algorithm) -> float:
    """The priority share that lets a check use ``part`` units of ``whole``'s budget: ``part /
    size``, raised by a float step while ``(1 - share) * size`` (the units kept back, as every
    store computes them) rounds above ``size - part``, so that exactly ``part`` units pass."""
    size = algorithm.size(whole)
    share = min(1.0, part / size)
    while share < 1.0 and keep_of(algorithm, whole, share) > size - part:
        share = math.nextafter(share, 2.0)
    return share


def with_limit(decision: Decision, limit: int) -> Decision:
    """``decision`` reporting ``limit`` as its limit (an allocation, an adaptive limit)."""
    return Decision(
        decision.allowed,
        limit,
        decision.remaining,
        decision.reset_after,
        decision.retry_after,
        decision.delay,
        decision.policy,
        decision.fallback,
        decision.details,
    )


def number(value: object, what: str, low: float, high: float, *, integer: bool = False) -> float:
    """``value`` checked to be a number (an ``int`` when ``integer``) from ``low`` to ``high``;
    `ConfigError` otherwise."""
    kind = int if integer else int | float
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        noun = "an integer" if integer else "a number"
        raise ConfigError(f"{what} must be {noun} from {low:g} to {high:g}, got {value!r}")
    return float(value)
