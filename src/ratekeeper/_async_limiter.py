"""A limiter class and its permit: one source for the asyncio face and the blocking one.

``_async_limiter.py`` is written by hand; ``_sync_limiter.py`` is generated from it by
``scripts/unasync.py``: ``async`` and ``await`` dropped, ``Async`` names mapped to their sync twins,
and the lines marked with a ``sync:`` or ``async-only`` comment replaced or left out (that script's
docstring has the rules). ``scripts/test`` fails while the two differ. Everything that is not I/O
is in `_limiter_base`.
"""

from __future__ import annotations

import asyncio  # sync: import threading
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, TypeAlias

from ratekeeper._drive import drive_async
from ratekeeper._limiter_base import (
    FAST_COSTS,
    HIT,
    LEASE,
    SLEEP,
    AsyncAcquire,
    LimiterCore,
    PermitBase,
)
from ratekeeper._local_quota import FETCH_WAIT, TAKE, WAIT
from ratekeeper.algorithms import INF
from ratekeeper.algorithms.checks import Check
from ratekeeper.clock import async_sleeper
from ratekeeper.decision import Decision
from ratekeeper.errors import RateLimitExceeded, StoreUnavailable
from ratekeeper.policies._async_reservation import AsyncReservation
from ratekeeper.policies.reservation import Ledger
from ratekeeper.stores import AsyncStore, async_store_from_url
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore

__all__ = ["AsyncPermit", "AsyncRateLimiter"]

# What `acquire` returns: awaitable and an async context manager; the sync one waits at once.
Acquiring: TypeAlias = "AsyncAcquire[AsyncPermit]"  # sync: Acquiring: TypeAlias = "Permit"
Reserving: TypeAlias = "AsyncAcquire[AsyncReservation]"  # sync: Reserving: TypeAlias = Reservation


class AsyncRateLimiter(LimiterCore):
    """Limit how often a key may do something (the methods of the asyncio face are coroutines).

    Memory store unless ``store=`` says otherwise. ``await limiter.hit("user:42")`` returns a
    :class:`Decision`.
    """

    store: AsyncStore
    _sleep: Callable[[float], Awaitable[None]]  # sync: _sleep: Callable[[float], None]
    _new_event = asyncio.Event  # sync: _new_event = threading.Event

    def _open(self, store: Any) -> None:
        if isinstance(store, MemoryStore):  # async-only
            store = AsyncMemoryStore(store)  # async-only
        self.store = self._opened(store, AsyncStore, AsyncMemoryStore, async_store_from_url)
        self._sleep = async_sleeper(self.clock)

    async def hit(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """Consume ``cost`` units for ``key`` if every limit allows it. Never raises on denial.

        ``priority``: a class of ``priorities=``, which may use only its share of the budget.
        """
        if type(key) is not str or type(cost) not in FAST_COSTS or not 0 <= cost < INF:
            key, cost = self._checked(key, cost)
        if not self._plain or priority is not None:
            if self._quota is not None and priority is None and cost:
                return await self._leased(key, cost)
            if priority is not None or self._classed:
                return await self._by_class(key, cost, priority, counted=True)
            return await self._watched(self.store.hit, key, cost, counted=True)
        try:
            decision = await self.store.hit(key, self.rule, cost, self.clock())
        except StoreUnavailable as exc:
            return self._fallback(exc)
        next(self._n_allowed if decision.allowed else self._n_denied)
        return decision

    async def _leased(self, key: str, cost: float) -> Decision:
        """``hit`` with ``local_quota``: from the key's local batch, else fetch one."""
        answer = self._local_answer(key, cost)
        if answer is not None:
            return answer
        assert self._quota is not None
        now = self.clock()
        outcome = await drive_async(self._quota.fetch(key, cost, self.clock), self._quota_step)
        return self._fetched(key, cost, now, outcome)

    async def _quota_step(self, step: tuple[str, Any]) -> Any:
        kind, arg = step
        if kind == WAIT:  # another caller's fetch of the key: True once it ended
            return await _finished(arg.event, FETCH_WAIT)  # sync: return arg.event.wait(FETCH_WAIT)
        if kind == TAKE:  # a batch with a plain hit
            return await self.store.hit(arg[0], self.rule, arg[1], self.clock())
        return await self._checks_store().apply_checks(arg, self.clock())

    async def peek(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """What :meth:`hit` would answer now, consuming nothing."""
        key, cost = self._checked(key, cost)
        if priority is not None or self._classed:
            return await self._by_class(key, cost, priority, counted=False)
        return await self._watched(self.store.peek, key, cost, counted=False)

    async def _by_class(
        self, key: str, cost: float, priority: str | None, *, counted: bool
    ) -> Decision:
        """``hit`` (``counted``) or ``peek`` within a priority class's share."""
        check = self._check(key, cost, priority)
        store = self._checks_store()
        decision = error = None
        started = perf_counter()
        try:
            decision = (await store.apply_checks([check], self.clock(), counted)).decisions[0]
        except StoreUnavailable as exc:
            error = exc
        if not counted:
            return self._peeked(decision, error)
        return self._settle(key, decision, error, None, perf_counter() - started)

    def reserve(self, key: str, cost: float = 1, priority: str | None = None) -> Reserving:
        """Charge an estimate now, settle with the actual cost later (a `Reservation`: ``bool``,
        ``decision``, ``commit(actual)``, ``cancel()``, ``charge(more)``; a context manager).
        Denied like :meth:`hit`, charging nothing then."""
        key, cost = self._checked(key, cost)
        check = self._check(key, cost, priority)
        reserving = self._reserve(check)
        return AsyncAcquire(reserving)  # sync: return reserving

    async def _reserve(self, check: Check) -> AsyncReservation:
        store = self._checks_store()
        decision = error = None
        now = self.clock()
        started = perf_counter()
        try:
            applied = await store.apply_checks([check], now)
        except StoreUnavailable as exc:
            error = exc
        else:
            decision, now = applied.decisions[0], applied.now
        decision = self._settle(check.key, decision, error, None, perf_counter() - started)
        ledger = Ledger([(check.key, self.rule)], [check.cost], decision, now)
        return AsyncReservation(ledger, store, self.clock, self._settle_failed)

    async def _watched(
        self,
        call: Callable[..., Awaitable[Decision]],  # sync: call: Callable[..., Decision],
        key: str,
        cost: float,
        *,
        counted: bool,
    ) -> Decision:
        """``hit`` (``counted``) or ``peek`` with the over-limit cache, shadow evaluation,
        counting and events (see `LimiterCore._settle`)."""
        now = self.clock()
        cache = self._cache
        decision = None if cache is None else cache.check(key, cost, now)
        error = None
        started = perf_counter()
        if decision is None:
            try:
                decision = await call(key, self.rule, cost, now)
            except StoreUnavailable as exc:
                error = exc
            else:
                if cache is not None and not decision.allowed:
                    cache.record(key, cost, now, decision)
        elapsed = perf_counter() - started
        candidate = None
        if self.shadow_rule is not None and error is None:
            try:
                candidate = await call(key, self.shadow_rule, cost, now)
            except StoreUnavailable:
                candidate = None  # the candidate limits are advisory: never fail a request
        if not counted:
            return self._peeked(decision, error)
        return self._settle(key, decision, error, candidate, elapsed)

    async def enforce(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """Like :meth:`hit`, but raise :class:`RateLimitExceeded` on denial."""
        decision = await self.hit(key, cost, priority)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    def acquire(self, key: str, cost: float = 1, timeout: float | None = None) -> Acquiring:
        """Wait until ``key`` may proceed (or raise :class:`RateLimitTimeout`).

        Returns the decision as a permit (``await`` it, or use it as a context manager): with
        ``max_concurrent`` the concurrency slot is held until the block exits (or until
        ``release()``, or ``lease_ttl`` if the holder dies).
        """
        key, cost = self._checked(key, cost)
        waiting = self._acquire(key, cost, timeout)
        return AsyncAcquire(waiting)  # sync: return waiting

    async def _acquire(self, key: str, cost: float, timeout: float | None) -> AsyncPermit:
        flow = self._acquire_flow(key, cost, timeout)
        decision, lease_id = await drive_async(flow, lambda step: self._run_step(key, *step))
        return AsyncPermit(decision, self, key, lease_id)

    async def _run_step(self, key: str, step: str, arg: Any) -> Any:
        if step == HIT:
            return await self.hit(key, arg)
        if step == SLEEP:
            return await self._sleep(arg)
        if step == LEASE:
            assert self.max_concurrent is not None
            return await self.store.acquire_lease(
                key, arg, self.max_concurrent, self.lease_ttl, self.clock()
            )
        return await self.store.release_lease(key, arg, self.clock())

    async def reset(self, key: str) -> None:
        """Forget everything about ``key`` (its budget becomes full, its leases are dropped)."""
        key = self._checked(key, 0)[0]
        if self._cache is not None:
            self._cache.discard(key)
        if self._quota is not None:
            self._quota.discard(key)
        await self.store.reset(key, self.rule)

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        await self.store.ping()

    async def close(self) -> None:
        """Give unused local quota back, and close the store if this limiter created it from a
        URL (or by default)."""
        try:
            if self._quota is not None:
                for refunds in self._quota.flush(self.clock()):
                    try:
                        await self._checks_store().apply_checks(refunds, self.clock())
                    except StoreUnavailable as exc:
                        self._refunds_lost(exc)
                        break
        finally:
            if self._owns_store:
                await self.store.close()

    async def __aenter__(self) -> AsyncRateLimiter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# async-only: begin
async def _finished(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` up to ``timeout`` seconds: whether it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


# async-only: end
class AsyncPermit(PermitBase):
    """The decision ``acquire`` gives; leaving its ``with`` block (or ``release()``) gives the
    concurrency slot back."""

    __slots__ = ()

    async def release(self) -> None:
        """Give the concurrency slot back now (idempotent)."""
        lease_id = self._take_lease()
        if lease_id is not None:
            limiter = self._limiter
            await limiter.store.release_lease(self._key, lease_id, limiter.clock())

    async def __aenter__(self) -> AsyncPermit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
