"""Clocks. The default is wall-clock time, so fixed windows align with real minutes and agree with
stores that read the server's clock. A clock is any ``() -> float``; it may also offer ``sleep`` and
``async_sleep`` (as :class:`ratekeeper.testing.FakeClock` does) so that waiting follows it.

A limiter built without ``clock=`` takes :func:`default_clock` when it is built: wall-clock time,
unless a test froze time (:class:`ratekeeper.testing.TimeMachine` calls :func:`set_default_clock`).
The choice is made once per limiter, so the hot path calls ``time.time`` directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = [
    "Clock",
    "async_sleeper",
    "default_clock",
    "set_default_clock",
    "sleeper",
    "system_clock",
]

Clock = Callable[[], float]
system_clock: Clock = time.time
_override: Clock | None = None  # set while a test has frozen time


def default_clock() -> Clock:
    """The clock for a limiter built without ``clock=``: a frozen test clock, else wall time."""
    return _override or system_clock


def set_default_clock(clock: Clock | None) -> Clock | None:
    """Make ``clock`` the default of limiters built from now on (``None``: wall time again).
    Returns the previous override. For test tools; applications pass ``clock=``."""
    global _override
    previous, _override = _override, clock
    return previous


def sleeper(clock: Clock) -> Callable[[float], None]:
    """The blocking sleep that goes with ``clock``."""
    sleep: Callable[[float], None] = getattr(clock, "sleep", time.sleep)
    return sleep


def async_sleeper(clock: Clock) -> Callable[[float], Awaitable[None]]:
    """The asyncio sleep that goes with ``clock``."""
    sleep: Callable[[float], Awaitable[None]] = getattr(clock, "async_sleep", asyncio.sleep)
    return sleep
