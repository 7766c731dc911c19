"""Assertions on limiters: each hits for real and fails with the decision that surprised it."""

from __future__ import annotations

from ratekeeper.decision import Decision
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter

__all__ = [
    "assert_allowed",
    "assert_allowed_async",
    "assert_denied",
    "assert_denied_async",
    "assert_limited_after",
    "assert_limited_after_async",
]


def _allowed(decision: Decision, i: int, times: int, key: str) -> None:
    assert decision.allowed, f"hit {i + 1} of {times} on {key!r} was denied: {decision!r}"


def _denied(decision: Decision, key: str, after: str = "") -> Decision:
    assert not decision.allowed, f"hit on {key!r}{after} was allowed: {decision!r}"
    return decision


def assert_allowed(limiter: RateLimiter, key: str, times: int = 1, cost: float = 1) -> None:
    """Hit ``key`` ``times`` times and fail unless every hit is allowed."""
    for i in range(times):
        _allowed(limiter.hit(key, cost), i, times, key)


def assert_denied(limiter: RateLimiter, key: str, cost: float = 1) -> Decision:
    """Hit ``key`` once and fail unless it is denied; return the denial."""
    return _denied(limiter.hit(key, cost), key)


def assert_limited_after(limiter: RateLimiter, key: str, n: int, cost: float = 1) -> Decision:
    """The first ``n`` hits on ``key`` pass and the next is denied; return the denial."""
    assert_allowed(limiter, key, n, cost)
    return _denied(limiter.hit(key, cost), key, f" after {n} allowed")


async def assert_allowed_async(
    limiter: AsyncRateLimiter, key: str, times: int = 1, cost: float = 1
) -> None:
    """`assert_allowed` for an `AsyncRateLimiter`."""
    for i in range(times):
        _allowed(await limiter.hit(key, cost), i, times, key)


async def assert_denied_async(limiter: AsyncRateLimiter, key: str, cost: float = 1) -> Decision:
    """`assert_denied` for an `AsyncRateLimiter`."""
    return _denied(await limiter.hit(key, cost), key)


async def assert_limited_after_async(
    limiter: AsyncRateLimiter, key: str, n: int, cost: float = 1
) -> Decision:
    """`assert_limited_after` for an `AsyncRateLimiter`."""
    await assert_allowed_async(limiter, key, n, cost)
    return _denied(await limiter.hit(key, cost), key, f" after {n} allowed")
