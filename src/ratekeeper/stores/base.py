"""The interface every store implements, sync and async. The `Rule` it is handed (an algorithm
over limits, pure data) lives beside `evaluate` in `ratekeeper.algorithms`; it is re-exported here.

A store does I/O only: it keeps one state per (rule part, key) and runs the algorithm's math
atomically, in-process (memory), in Lua (Redis), in SQL (PostgreSQL) or in a compare-and-swap loop
(NATS). ``now`` is the limiter's clock reading; stores with a server clock ignore it unless they
were built to trust the caller's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from ratekeeper.algorithms import Rule
from ratekeeper.algorithms.checks import Check
from ratekeeper.decision import Decision

__all__ = ["Applied", "AsyncCheckStore", "AsyncStore", "CheckStore", "Check", "Rule", "Store"]


class Applied(NamedTuple):
    """What `CheckStore.apply_checks` answers: one decision per check, and the clock reading the
    store decided at (the server's time for a store that reads its own clock), which a
    reservation needs to refund into the window it charged."""

    decisions: list[Decision]
    now: float


LEASE_PART = "concurrency"


@runtime_checkable
class Store(Protocol):
    """A synchronous store.

    A store that runs the algorithms server-side (Lua, SQL) may also have an ``algorithms``
    attribute naming those it can run; limiters check it when they are built.
    """

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        """Apply a request of ``cost`` to every limit of ``rule`` for ``key``, all-or-nothing."""
        ...

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        """What :meth:`hit` would answer now, changing nothing."""
        ...

    def reset(self, key: str, rule: Rule) -> None:
        """Forget ``key``'s state for every limit of ``rule`` (and its leases)."""
        ...

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        """Take one of ``limit`` concurrency slots of ``key`` for ``ttl`` seconds.

        Returns 0.0 when granted, else a hint of how long to wait (seconds until the earliest
        lease expires).
        """
        ...

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        """Give a concurrency slot back."""
        ...

    def ping(self) -> None:
        """Health check: return when the store answers, raise `StoreUnavailable` when not."""
        ...

    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """The asyncio twin of :class:`Store`: the same methods, as coroutines."""

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision: ...

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision: ...

    async def reset(self, key: str, rule: Rule) -> None: ...

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float: ...

    async def release_lease(self, key: str, lease_id: str, now: float) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class CheckStore(Protocol):
    """A store that applies several checks (`ratekeeper.algorithms.checks`) atomically: what
    `Chain`, reservations and priorities need. A separate method, so that a single-limit `hit`
    keeps its own fast path."""

    def apply_checks(self, checks: Sequence[Check], now: float, write: bool = True) -> Applied:
        """Apply ``checks`` all-or-nothing in one round trip (``write=False``: decide only, as
        ``peek``); raise `StoreUnavailable` when the store cannot answer."""
        ...


@runtime_checkable
class AsyncCheckStore(Protocol):
    """The asyncio twin of :class:`CheckStore`."""

    async def apply_checks(
        self, checks: Sequence[Check], now: float, write: bool = True
    ) -> Applied: ...
