"""`AsyncChain` (hand-written) and `Chain` (generated from it into ``_sync_chain.py`` by
``scripts/unasync.py``). Everything that is not I/O is in `ratekeeper.policies.chain`."""

from __future__ import annotations

from ratekeeper._limiter_base import AsyncAcquire
from ratekeeper.algorithms.checks import Check
from ratekeeper.decision import Decision
from ratekeeper.errors import RateLimitExceeded, StoreUnavailable
from ratekeeper.limiter import AsyncRateLimiter
from ratekeeper.policies._async_reservation import AsyncReservation
from ratekeeper.policies.chain import ChainCore
from ratekeeper.policies.reservation import Amounts

__all__ = ["AsyncChain"]


class AsyncChain(ChainCore):
    """One request against several limiters (each with its own key), all-or-nothing.

    ``AsyncChain(global_limiter, tenant_limiter, user_limiter)``, then
    ``await chain.hit("global", "tenant:7", "user:42")``. The limiters share one store; ``cost``
    is a number (every level) or one number per level.
    """

    def __init__(self, *limiters: AsyncRateLimiter) -> None:
        super().__init__(limiters, AsyncRateLimiter)

    async def hit(self, *keys: str, cost: Amounts = 1, priority: str | None = None) -> Decision:
        """Consume ``cost`` at every level if every level admits it; a denial consumes nothing."""
        return await self._decide(keys, cost, priority, write=True)

    async def peek(self, *keys: str, cost: Amounts = 1, priority: str | None = None) -> Decision:
        """What :meth:`hit` would answer now, consuming nothing."""
        return await self._decide(keys, cost, priority, write=False)

    async def enforce(self, *keys: str, cost: Amounts = 1, priority: str | None = None) -> Decision:
        """Like :meth:`hit`, but raise :class:`RateLimitExceeded` on denial."""
        decision = await self.hit(*keys, cost=cost, priority=priority)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    async def _decide(
        self, keys: tuple[str, ...], cost: Amounts, priority: str | None, *, write: bool
    ) -> Decision:
        checks = self.checks(keys, cost, priority)
        try:
            applied = await self.store.apply_checks(checks, self.clock(), write)
        except StoreUnavailable as exc:
            return self.fallback(exc, counted=write)
        return self.combined(applied.decisions)

    def reserve(
        self, *keys: str, cost: Amounts = 1, priority: str | None = None
    ) -> AsyncAcquire[AsyncReservation]:  # sync: ) -> Reservation:
        """Charge an estimate at every level now, settle later (see `AsyncReservation`)."""
        checks = self.checks(keys, cost, priority)
        reserving = self._reserve(checks)
        return AsyncAcquire(reserving)  # sync: return reserving

    async def _reserve(self, checks: list[Check]) -> AsyncReservation:
        now = self.clock()
        try:
            applied = await self.store.apply_checks(checks, now)
        except StoreUnavailable as exc:
            decision = self.fallback(exc)
        else:
            decision, now = self.combined(applied.decisions), applied.now
        return AsyncReservation(
            self.ledger(checks, decision, now), self.store, self.clock, self.settle_failed
        )

    async def reset(self, *keys: str) -> None:
        """Forget every level's state for its key."""
        for key, limiter in zip(self.keys_of(keys), self.limiters, strict=True):
            await limiter.reset(key)
