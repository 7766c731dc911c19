"""Limiters whose answers a test decides: `MockRateLimiter` (always allow, always deny, or a
scripted sequence), its asyncio twin, and the `AllowAll` / `DenyAll` shorthands.

They are real `RateLimiter` / `AsyncRateLimiter` subclasses (``enforce``, ``acquire``, ``peek``,
argument checks, metrics and observers all work), built on a `FakeClock` unless given ``clock=``
so that ``acquire()`` never sleeps. Every ``hit`` is recorded in ``calls``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Literal

from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, RateLimitExceeded, RateLimitTimeout
from ratekeeper.limiter import AsyncAcquire, AsyncPermit, AsyncRateLimiter, Permit, RateLimiter
from ratekeeper.limits import Limit
from ratekeeper.testing.clock import FakeClock

__all__ = ["AllowAll", "AsyncMockRateLimiter", "DenyAll", "MockRateLimiter", "Mode"]

Mode = Literal["always_allow", "always_deny", "sequence"]
MOCK_LIMITS = "1000000/second"  # the fastest rate a limit may have (MAX_RATE)
DENIED_RETRY_AFTER = 1.0  # what a scripted denial tells the caller to wait, by default


def fixed_decision(allowed: bool, retry_after: float = DENIED_RETRY_AFTER) -> Decision:
    """An allowing or denying decision of the mock limit (full budget, or none)."""
    limit = Limit(1_000_000, per=1)
    return Decision(
        allowed,
        limit.amount,
        limit.amount if allowed else 0,
        0.0 if allowed else retry_after,
        0.0 if allowed else retry_after,
        0.0,
        limit,
    )


class _Script:
    """What the mock answers next: the sync and async twins share it."""

    def __init__(
        self, mode: str, sequence: Iterable[bool | Decision] | None, retry_after: float
    ) -> None:
        if mode not in ("always_allow", "always_deny", "sequence"):
            raise ConfigError(
                f"mode must be 'always_allow', 'always_deny' or 'sequence', got {mode!r}"
            )
        if (mode == "sequence") != (sequence is not None):
            raise ConfigError("sequence= is required with mode='sequence', and only then")
        self.mode = mode
        self.retry_after = retry_after
        self.answers = [
            a if isinstance(a, Decision) else fixed_decision(bool(a), retry_after)
            for a in (sequence or ())
        ]
        self.position = 0
        self.calls: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def next(self, key: str, cost: float, *, consume: bool) -> Decision:
        with self._lock:
            if consume:
                self.calls.append((key, cost))
            if self.mode != "sequence":
                return fixed_decision(self.mode == "always_allow", self.retry_after)
            if self.position >= len(self.answers):
                raise AssertionError(
                    f"MockRateLimiter: the sequence of {len(self.answers)} answers is used up "
                    f"(hit {len(self.calls)} on {key!r})"
                )
            answer = self.answers[self.position]
            self.position += consume
            return answer

    def refuse_forever(self, key: str, timeout: float | None) -> None:
        """``acquire`` on an always-denying mock: raise at once instead of waiting forever."""
        if self.mode == "always_deny":
            self.calls.append((key, 0.0))
            denial = fixed_decision(False, self.retry_after)
            if timeout is None:
                raise RateLimitExceeded(denial)
            raise RateLimitTimeout(denial, f"MockRateLimiter(always_deny): {key!r} never passes")


def _mock_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("clock", FakeClock())
    return kwargs


class _Scripted:
    """The part both mock limiters share: the script of answers and what was asked."""

    _script: _Script

    def __init__(
        self,
        mode: Mode = "always_allow",
        *,
        sequence: Iterable[bool | Decision] | None = None,
        limits: str = MOCK_LIMITS,
        retry_after: float = DENIED_RETRY_AFTER,
        **options: Any,
    ) -> None:
        self._script = _Script(mode, sequence, retry_after)
        super().__init__(limits, **_mock_options(options))  # type: ignore[call-arg]

    @property
    def calls(self) -> list[tuple[str, float]]:
        """``(key, cost)`` of every hit so far, in order."""
        return self._script.calls


class MockRateLimiter(_Scripted, RateLimiter):
    """A drop-in `RateLimiter` answering as told.

    ``mode="always_allow"`` / ``"always_deny"``, or ``"sequence"`` with ``sequence=[True, False,
    ...]`` (or `Decision` objects): each ``hit`` takes the next answer (``peek`` looks at it
    without taking it); running out raises `AssertionError`. ``acquire`` on an always-denying
    mock raises at once (`RateLimitExceeded`, or `RateLimitTimeout` with a timeout); in sequence
    mode it takes answers until one allows. ``calls`` lists ``(key, cost)`` of every hit.
    """

    def hit(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        key, cost = self._checked(key, cost)
        return self._script.next(key, cost, consume=True)

    def peek(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        key, cost = self._checked(key, cost)
        return self._script.next(key, cost, consume=False)

    def acquire(self, key: str, cost: float = 1, timeout: float | None = None) -> Permit:
        self._script.refuse_forever(key, timeout)
        return super().acquire(key, cost, timeout)


class AsyncMockRateLimiter(_Scripted, AsyncRateLimiter):
    """`MockRateLimiter` for code that uses an `AsyncRateLimiter` (same arguments)."""

    async def hit(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        key, cost = self._checked(key, cost)
        return self._script.next(key, cost, consume=True)

    async def peek(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        key, cost = self._checked(key, cost)
        return self._script.next(key, cost, consume=False)

    def acquire(
        self, key: str, cost: float = 1, timeout: float | None = None
    ) -> AsyncAcquire[AsyncPermit]:
        self._script.refuse_forever(key, timeout)
        return super().acquire(key, cost, timeout)


class AllowAll(MockRateLimiter):
    """A `RateLimiter` that allows every request (e.g. to switch limiting off in tests)."""

    def __init__(self, limits: str = MOCK_LIMITS, **options: Any) -> None:
        super().__init__("always_allow", limits=limits, **options)


class DenyAll(MockRateLimiter):
    """A `RateLimiter` that denies every request (to test your 429 handling)."""

    def __init__(self, limits: str = MOCK_LIMITS, **options: Any) -> None:
        super().__init__("always_deny", limits=limits, **options)
