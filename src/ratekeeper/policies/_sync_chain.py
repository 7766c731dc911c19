# Generated from src/ratekeeper/policies/_async_chain.py by scripts/unasync.py; do not edit.
"""`Chain` (hand-written) and `Chain` (generated from it into ``_sync_chain.py`` by
``scripts/unasync.py``). Everything that is not I/O is in `ratekeeper.policies.chain`."""

from __future__ import annotations

from ratekeeper.algorithms.checks import Check
from ratekeeper.decision import Decision
from ratekeeper.errors import RateLimitExceeded, StoreUnavailable
from ratekeeper.limiter import RateLimiter
from ratekeeper.policies._sync_reservation import Reservation
from ratekeeper.policies.chain import ChainCore
from ratekeeper.policies.reservation import Amounts

__all__ = ["Chain"]


class Chain(ChainCore):
    """One request against several limiters (each with its own key), all-or-nothing.

    ``Chain(global_limiter, tenant_limiter, user_limiter)``, then
    ``chain.hit("global", "tenant:7", "user:42")``. The limiters share one store; ``cost``
    is a number (every level) or one number per level.
    """

    def __init__(self, *limiters: RateLimiter) -> None:
        super().__init__(limiters, RateLimiter)

    def hit(self, *keys: str, cost: Amounts = 1, priority: str | None = None) -> Decision:
        """Consume ``cost`` at every level if every level admits it; a denial consumes nothing."""
        return self._decide(keys, cost, priority, write=True)

    def peek(self, *keys: str, cost: Amounts = 1, priority: str | None = None) -> Decision:
        """What :meth:`hit` would answer now, consuming nothing."""
        return self._decide(keys, cost, priority, write=False)

    def enforce(self, *keys: str, cost: Amounts = 1, priority: str | None = None) -> Decision:
        """Like :meth:`hit`, but raise :class:`RateLimitExceeded` on denial."""
        decision = self.hit(*keys, cost=cost, priority=priority)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    def _decide(
        self, keys: tuple[str, ...], cost: Amounts, priority: str | None, *, write: bool
    ) -> Decision:
        checks = self.checks(keys, cost, priority)
        try:
            applied = self.store.apply_checks(checks, self.clock(), write)
        except StoreUnavailable as exc:
            return self.fallback(exc, counted=write)
        return self.combined(applied.decisions)

    def reserve(self, *keys: str, cost: Amounts = 1, priority: str | None = None) -> Reservation:
        """Charge an estimate at every level now, settle later (see `Reservation`)."""
        checks = self.checks(keys, cost, priority)
        reserving = self._reserve(checks)
        return reserving

    def _reserve(self, checks: list[Check]) -> Reservation:
        now = self.clock()
        try:
            applied = self.store.apply_checks(checks, now)
        except StoreUnavailable as exc:
            decision = self.fallback(exc)
        else:
            decision, now = self.combined(applied.decisions), applied.now
        return Reservation(
            self.ledger(checks, decision, now), self.store, self.clock, self.settle_failed
        )

    def reset(self, *keys: str) -> None:
        """Forget every level's state for its key."""
        for key, limiter in zip(self.keys_of(keys), self.limiters, strict=True):
            limiter.reset(key)
