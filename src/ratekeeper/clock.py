"""Clocks. The default is wall-clock time, so fixed windows align with real minutes and agree with
stores that read the server's clock. A clock is any ``() -> float``; it may also offer ``sleep`` and
``async_sleep`` (as :class:`ratekeeper.testing.FakeClock` does) so that waiting follows it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["Clock", "async_sleeper", "sleeper", "system_clock"]

Clock = Callable[[], float]
system_clock: Clock = time.time


def sleeper(clock: Clock) -> Callable[[float], None]:
    """The blocking sleep that goes with ``clock``."""
    sleep: Callable[[float], None] = getattr(clock, "sleep", time.sleep)
    return sleep


def async_sleeper(clock: Clock) -> Callable[[float], Awaitable[None]]:
    """The asyncio sleep that goes with ``clock``."""
    sleep: Callable[[float], Awaitable[None]] = getattr(clock, "async_sleep", asyncio.sleep)
    return sleep
