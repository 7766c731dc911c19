"""Controllable time: `FakeClock` (pass it as ``clock=``) and `TimeMachine` (freeze the time of
every limiter built without ``clock=``, e.g. deep inside the application under test)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from types import TracebackType

from ratekeeper.clock import Clock, set_default_clock

__all__ = ["FakeClock", "TimeMachine"]


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
        """Move the clock forward by ``seconds`` (negative raises `ValueError`)."""
        if seconds < 0:
            raise ValueError(f"a FakeClock cannot go backwards (advance({seconds!r}))")
        self.now += seconds
        self.elapsed += seconds

    def set(self, when: float) -> None:
        """Jump to ``when`` (backwards too: to test clocks that step back)."""
        self.now = float(when)

    def sleep(self, seconds: float) -> None:
        """Stand-in for `time.sleep`: advance by ``seconds`` at once (what `acquire` calls)."""
        self.advance(max(seconds, 0.0))

    async def async_sleep(self, seconds: float) -> None:
        """Stand-in for `asyncio.sleep`: advance by ``seconds``, then yield to the loop once."""
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"


def _seconds(when: float | datetime) -> float:
    """Unix seconds of ``when``; a naive datetime is read as UTC."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return float(when)


class TimeMachine:
    """Freeze time for every limiter built without ``clock=`` (ratelink's ``TimeMachine``).

    Example::

        tm = TimeMachine().freeze()          # or: with TimeMachine() as tm:
        limiter = RateLimiter("1/minute")    # built while frozen: runs on tm's time
        tm.advance(60)                       # a minute passes, instantly
        tm.travel_to(datetime(2030, 1, 1))   # or jump (backwards too)
        tm.unfreeze()

    Limiters pick their clock when they are built: one built before ``freeze()`` keeps wall time,
    one built while frozen keeps this machine's clock (a `FakeClock`, ``tm.clock``) for its whole
    life, and its ``acquire()`` waits by advancing it. Stores that read the server's clock (Redis,
    PostgreSQL, unless built to trust the caller's) ignore the limiter's clock entirely.
    """

    def __init__(self, start: float | datetime | None = None) -> None:
        self.clock = FakeClock(time.time() if start is None else _seconds(start))
        self._previous: Clock | None = None
        self.frozen = False

    def __call__(self) -> float:
        return self.clock()

    def freeze(self) -> TimeMachine:
        """Make this machine's clock the default of limiters built from now on."""
        if not self.frozen:
            self._previous = set_default_clock(self.clock)
            self.frozen = True
        return self

    def unfreeze(self) -> None:
        """Limiters built from now on use the clock they used before ``freeze()``."""
        if self.frozen:
            set_default_clock(self._previous)
            self.frozen = False

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (negative raises `ValueError`)."""
        self.clock.advance(seconds)

    def travel_to(self, when: float | datetime) -> None:
        """Jump to ``when`` (Unix seconds or a datetime; naive means UTC). Forward, the jump
        counts as time passing (budgets refill, idle keys may be evicted); backward, it is a
        clock stepping back, which never grants extra capacity."""
        target = _seconds(when)
        if target >= self.clock():
            self.clock.advance(target - self.clock())
        else:
            self.clock.set(target)

    def __enter__(self) -> TimeMachine:
        return self.freeze()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unfreeze()

    def __repr__(self) -> str:
        state = "frozen" if self.frozen else "not frozen"
        return f"TimeMachine({self.clock()!r}, {state})"
