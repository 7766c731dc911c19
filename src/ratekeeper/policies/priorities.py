"""Priority classes: ``priorities={"critical": 1.0, "default": 0.8, "batch": 0.5}`` on a limiter,
``hit(key, priority="batch")``. A class may use only its share of each limit's budget (the burst
of a bucket or GCRA, the amount of a window): a ``batch`` hit passes only if, after it, at most
half of the budget is in use, so the last part is kept for more important traffic (Stripe's
"fleet usage" load shedder). A hit without ``priority=`` belongs to the class ``"default"`` when
one is configured, else it may use the whole budget.

Every rate algorithm has such a budget, so every one supports classes (the leaky bucket's is its
queue). The concurrency cap (``max_concurrent``) does not: a slot is not divisible, and a lease
holder's class is not known when another asks; classes apply to its rate limits only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ratekeeper.errors import ConfigError

__all__ = ["DEFAULT_CLASS", "Priorities", "check_priorities"]

DEFAULT_CLASS = "default"

Priorities = Mapping[str, float]


def check_priorities(priorities: object) -> dict[str, float] | None:
    """The classes, validated: names are non-empty strings, shares numbers in (0, 1]."""
    if priorities is None:
        return None
    if not isinstance(priorities, Mapping) or not priorities:
        raise ConfigError(
            f"priorities must be a non-empty mapping of class name to share, got {priorities!r}"
        )
    out: dict[str, float] = {}
    for name, share in priorities.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a priority class name must be a non-empty string, got {name!r}")
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not math.isfinite(share)
            or not 0 < share <= 1
        ):
            raise ConfigError(
                f"the share of priority class {name!r} must be a number in (0, 1], got {share!r}"
            )
        out[name] = float(share)
    return out


def share_of(priorities: Mapping[str, float] | None, priority: str | None) -> float:
    """The share of ``priority`` (``None``: the default class, else the whole budget); an
    unknown class raises `ValueError`."""
    if priority is None:
        if priorities is None:
            return 1.0
        return priorities.get(DEFAULT_CLASS, 1.0)
    if priorities is None or priority not in priorities:
        known = ", ".join(map(repr, priorities or {})) or "none configured"
        raise ValueError(f"unknown priority class {priority!r} (classes: {known})")
    return priorities[priority]
