"""Tools for testing code that uses ratekeeper: a controllable clock, limiters that always allow or
always deny, and assertions."""

from __future__ import annotations

import asyncio
from typing import Any

from ratekeeper.decision import Decision
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter
from ratekeeper.limits import Limit

__all__ = [
    "AllowAll",
    "DenyAll",
    "FakeClock",
    "assert_allowed",
    "assert_allowed_async",
    "assert_denied",
    "assert_denied_async",
]


class FakeClock:
    """A clock that moves only when told. ``clock()`` returns seconds; ``advance(s)`` moves it.

    Limiters built with ``clock=FakeClock()`` also sleep on it: ``acquire()`` advances the fake
    time instead of waiting, so tests never sleep.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = float(start)
        self.elapsed = 0.0  # what `advance` and `sleep` added up to; `set` jumps, it does not pass

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        """Elapsed time as a monotonic clock sees it: ``set`` (a jump of the wall clock, either
        way) does not move it. Memory stores gate eviction on it (see ratekeeper.stores.memory)."""
        return self.elapsed

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a FakeClock cannot go backwards (advance({seconds!r}))")
        self.now += seconds
        self.elapsed += seconds

    def set(self, when: float) -> None:
        """Jump to ``when`` (backwards too: to test clocks that step back)."""
        self.now = float(when)

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))

    async def async_sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"


def _fixed(allowed: bool) -> Decision:
    limit = Limit(1_000_000, per=1)  # the fastest rate a limit may have (MAX_RATE)
    return Decision(
        allowed,
        limit.amount,
        limit.amount if allowed else 0,
        0.0,
        0.0 if allowed else 1.0,
        0.0,
        limit,
    )


class _Fixed(RateLimiter):
    _allowed = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(args[0] if args else "1000000/second", **kwargs)

    def hit(self, key: str, cost: float = 1) -> Decision:
        self._checked(key, cost)
        return _fixed(self._allowed)

    peek = hit


class AllowAll(_Fixed):
    """A `RateLimiter` that allows every request (e.g. to switch limiting off in tests)."""


class DenyAll(_Fixed):
    """A `RateLimiter` that denies every request (to test your 429 handling)."""

    _allowed = False


def assert_allowed(limiter: RateLimiter, key: str, times: int = 1, cost: float = 1) -> None:
    """Hit ``key`` ``times`` times and fail unless every hit is allowed."""
    for i in range(times):
        decision = limiter.hit(key, cost)
        assert decision.allowed, f"hit {i + 1} of {times} on {key!r} was denied: {decision!r}"


def assert_denied(limiter: RateLimiter, key: str, cost: float = 1) -> Decision:
    """Hit ``key`` once and fail unless it is denied; return the denial."""
    decision = limiter.hit(key, cost)
    assert not decision.allowed, f"hit on {key!r} was allowed: {decision!r}"
    return decision


async def assert_allowed_async(
    limiter: AsyncRateLimiter, key: str, times: int = 1, cost: float = 1
) -> None:
    """`assert_allowed` for an `AsyncRateLimiter`."""
    for i in range(times):
        decision = await limiter.hit(key, cost)
        assert decision.allowed, f"hit {i + 1} of {times} on {key!r} was denied: {decision!r}"


async def assert_denied_async(limiter: AsyncRateLimiter, key: str, cost: float = 1) -> Decision:
    """`assert_denied` for an `AsyncRateLimiter`."""
    decision = await limiter.hit(key, cost)
    assert not decision.allowed, f"hit on {key!r} was allowed: {decision!r}"
    return decision
