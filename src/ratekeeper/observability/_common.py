"""What every observer reads the same way from an `Event`, so Prometheus, StatsD and
OpenTelemetry count exactly the same things: which result a decision counts as, whether it was
near the limit, which durations are meaningful, and the histogram buckets. Also the lazy import of
a client library, with a `ConfigError` naming the extra to install."""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Final

from ratekeeper.algorithms.base import EPS_UNITS
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError
from ratekeeper.events import Event, Result

__all__ = [
    "DEFAULT_NEAR_LIMIT_RATIO",
    "RESULTS",
    "STORE_BUCKETS",
    "WAIT_BUCKETS",
    "headroom",
    "is_near_limit",
    "require",
    "result_of",
    "store_seconds",
    "wait_seconds",
]

RESULTS: Final[tuple[Result, ...]] = ("allowed", "denied", "shadow_denied", "error")
# An allowed decision is "near the limit" when at most (1 - ratio) of the limit is left.
DEFAULT_NEAR_LIMIT_RATIO: Final = 0.8
# Seconds. Store round trips: a memory store answers in microseconds, Redis on loopback in
# 50-200 us, across a network in 0.5-5 ms; the network stores' deadline is 0.5 s.
STORE_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# Seconds. `acquire` waits: from a few milliseconds to the minute-long periods of common limits.
WAIT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


def require(module: str, extra: str, observer: str) -> ModuleType:
    """Import ``module`` now (client libraries are never imported at ratekeeper's import time)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{observer} needs {module.split('.')[0]}: pip install 'ratekeeper[{extra}]'"
        ) from exc


def headroom(near_limit_ratio: float) -> float:
    """The share of the limit left at which an allowed decision counts as near the limit."""
    if not 0.0 <= near_limit_ratio <= 1.0:
        raise ConfigError(f"near_limit_ratio must be between 0 and 1, got {near_limit_ratio!r}")
    return 1.0 - near_limit_ratio


def result_of(event: Event) -> Result | None:
    """The result a decision counts as (None: not one of the four, so not counted)."""
    result = event.result
    if result == "allowed" and event.shadow_denied:
        return "shadow_denied"
    return result if result in RESULTS else None


def is_near_limit(decision: Decision | None, share: float) -> bool:
    """An allowed decision with at most ``share`` of its limit remaining (``share`` from
    :func:`headroom`). The ``EPS_UNITS`` slack keeps float noise from excluding a decision that
    is exactly at the threshold (``(1 - 0.8) * 10`` is 1.9999999999999996)."""
    if decision is None:
        return False
    return bool(decision.remaining <= share * decision.limit + EPS_UNITS)


def store_seconds(value: float) -> float | None:
    """A store round trip worth recording: finite and positive (None otherwise: 0 means "not
    measured", e.g. a decision answered by the over-limit local cache)."""
    if value > 0.0 and math.isfinite(value):
        return value
    return None


def wait_seconds(value: float) -> float:
    """An ``acquire`` wait (0 when it got its slot at once, or the value is not a duration)."""
    if value > 0.0 and math.isfinite(value):
        return value
    return 0.0
