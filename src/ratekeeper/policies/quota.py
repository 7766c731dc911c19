"""Quota pools (ratelink's ``QuotaPool``): ``pool = QuotaPool(total_quota=10000, window=3600)``,
``pool.allocate("user:123", quota=100)``, then ``pool.hit("user:123")``. A member may use its
allocation per window, and all members together the pool's total; a member without an
allocation is denied. Unused allocation is not borrowable unless ``borrow=`` says so: with
``borrow=s`` (a share in (0, 1]; ``True`` is 1.0) a member past its allocation may still take
units from the pool while, after the hit, at most ``s`` of the pool's total is in use (so
``borrow=0.8`` keeps the last fifth for members within their allocation). Allocations may add up
to more than the total (overcommit): the pool's total still caps them all.

Built on the chain's operation: a hit is one atomic ``apply_checks`` of the pool's check and the
member's (a denial at either consumes nothing at both). The member's check is a window of
``total_quota`` per ``window`` with the priority share ``quota / total_quota``
(`ratekeeper.policies.priorities`): it passes only if, after it, at most ``quota`` units are in
use. So a new allocation keeps the member's usage of the window.

The allocations are kept in the store as limiter state, so every process sees them: a member's
allocation is the usage of a sliding log of ``total_quota`` per ten years (``MAX_PERIOD``), read
with a peek. It is written in two registers, in this order: B is reset and charged
with the new quota, then A; a reader takes A, or B while A is empty, so it always sees the old or
the new allocation, never none (two concurrent ``allocate`` of one member: one of them wins). An
allocation is kept ten years after it is written (on NATS, at most the bucket's ``ttl``: allocate
again within it). A hit reads the allocation, then decides: two round trips (three when it
borrows).
"""

from __future__ import annotations

from typing import Any

from ratekeeper._drive import drive, drive_async
from ratekeeper.algorithms import INF, Rule
from ratekeeper.algorithms.checks import CHARGE, HIT, Check
from ratekeeper.decision import Decision, combine
from ratekeeper.errors import ConfigError, RateLimitExceeded, StoreUnavailable
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter
from ratekeeper.limits import MAX_AMOUNT, MAX_PERIOD, MIN_PERIOD, Limit
from ratekeeper.policies._steps import (
    AsyncSteps,
    Flow,
    SyncSteps,
    apply,
    number,
    reset,
    share_for,
    with_limit,
)

__all__ = ["AsyncQuotaPool", "QuotaCore", "QuotaPool"]

WINDOWS = ("fixed_window", "sliding_window", "sliding_log")


class QuotaCore:
    """What `QuotaPool` and `AsyncQuotaPool` share (see the module docstring)."""

    store: Any

    _kind: type[Any]  # the limiter class of the face: RateLimiter or AsyncRateLimiter

    def __init__(
        self,
        total_quota: int,
        window: float,
        *,
        algorithm: str = "fixed_window",
        store: Any = None,
        clock: Any = None,
        name: str = "pool",
        borrow: bool | float = False,
        on_store_error: Any = "raise",
    ) -> None:
        kind = self._kind
        total = int(number(total_quota, "total_quota", 1, MAX_AMOUNT, integer=True))
        period = number(window, "window", MIN_PERIOD, MAX_PERIOD)
        if algorithm not in WINDOWS:
            raise ConfigError(
                f"QuotaPool needs a window algorithm ({', '.join(WINDOWS)}), got {algorithm!r}:"
                " a quota is an amount per window"
            )
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        if borrow is True:
            borrow = 1.0
        self.borrow = 0.0 if borrow is False else number(borrow, "borrow", 0.0, 1.0)
        if borrow is not False and not self.borrow > 0:
            raise ConfigError(f"borrow must be False, True or a share in (0, 1], got {borrow!r}")
        self.total, self.window, self.name = total, period, name
        self.limiter = kind(
            Limit(total, per=period),
            algorithm=algorithm,
            store=store,
            clock=clock,
            on_store_error=on_store_error,
            name=name,
        )
        self.store = self.limiter._checks_store()
        self.clock = self.limiter.clock
        limits = self.limiter.limits
        self.pool = Rule(algorithm, limits, namespace="quota:pool:")
        self.members = Rule(algorithm, limits, namespace=f"quota:{name}:member:")
        register = (Limit(total, per=MAX_PERIOD),)
        self.registers = (
            Rule("sliding_log", register, namespace=f"quota:{name}:allocation-a:"),
            Rule("sliding_log", register, namespace=f"quota:{name}:allocation-b:"),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(total_quota={self.total}, window={self.window:g}, "
            f"name={self.name!r}, algorithm={self.limiter.algorithm!r})"
        )

    def _member(self, member: object) -> str:
        return self.limiter._checked(member, 0)[0]  # type: ignore[no-any-return]

    def _read(self, member: str) -> Flow[int]:
        """The member's allocation: register A, or B while A is empty."""
        checks = [Check(member, rule, 0.0, HIT) for rule in self.registers]
        applied = yield apply(checks, self.clock(), False)
        a, b = (self.total - int(d.remaining) for d in applied.decisions)
        return a or b

    def _allocation(self, member: object) -> Flow[int]:
        return (yield from self._read(self._member(member)))

    def _allocate(self, member: object, quota: object) -> Flow[None]:
        name = self._member(member)
        units = number(quota, "quota", 0, self.total, integer=True)
        for rule in reversed(self.registers):  # B, then A (see the module docstring)
            yield reset(name, rule)
            if units:
                yield apply([Check(name, rule, units, CHARGE)], self.clock())

    def _decide(self, member: object, cost: object, write: bool) -> Flow[Decision]:
        name, units = self.limiter._checked(member, cost)
        try:
            quota = yield from self._read(name)
            if not quota:
                return self._unallocated()
            whole = self.limiter.limits[0]
            share = share_for(quota, whole, self.members.algorithm)
            checks = [
                Check(self.name, self.pool, units, HIT),
                Check(name, self.members, units, HIT, share),
            ]
            applied = yield apply(checks, self.clock(), write)
            pool, own = applied.decisions
            if not own.allowed and pool.allowed and self.borrow:
                checks = [
                    Check(self.name, self.pool, units, HIT, self.borrow),
                    Check(name, self.members, units, HIT),
                ]
                borrowed = yield apply(checks, self.clock(), write)
                if all(borrowed.decisions):
                    pool, own = borrowed.decisions
        except StoreUnavailable as exc:
            return self.limiter._fallback(exc, counted=write)  # type: ignore[no-any-return]
        return combine([pool, with_limit(own, quota)])

    def _unallocated(self) -> Decision:
        """The denial of a member without an allocation."""
        return Decision(False, 0, 0, 0.0, INF, 0.0, self.limiter.limits[0])

    def _reset(self, member: object) -> Flow[None]:
        yield reset(self._member(member), self.members)

    def _reset_pool(self) -> Flow[None]:
        yield reset(self.name, self.pool)


class QuotaPool(SyncSteps, QuotaCore):
    """A pool of ``total_quota`` units per ``window`` seconds shared by members, each capped at
    its allocation (see the module docstring)."""

    _kind = RateLimiter

    def allocate(self, member: str, quota: int) -> None:
        """Give ``member`` ``quota`` units per window (0 takes its allocation away), for every
        process that shares the store."""
        drive(self._allocate(member, quota), self._run)

    def allocation(self, member: str) -> int:
        """``member``'s allocation (0 when it has none)."""
        return drive(self._allocation(member), self._run)

    def hit(self, member: str, cost: float = 1) -> Decision:
        """Consume ``cost`` from the member's allocation and the pool, if both admit it;
        ``details`` has the pool's decision and the member's (``limit``: its allocation)."""
        return drive(self._decide(member, cost, True), self._run)

    def peek(self, member: str, cost: float = 1) -> Decision:
        """What :meth:`hit` would answer now, consuming nothing."""
        return drive(self._decide(member, cost, False), self._run)

    def enforce(self, member: str, cost: float = 1) -> Decision:
        """Like :meth:`hit`, but raise :class:`RateLimitExceeded` on denial."""
        decision = self.hit(member, cost)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    def reset(self, member: str) -> None:
        """Forget ``member``'s usage (not its allocation, nor its share of the pool's usage)."""
        drive(self._reset(member), self._run)

    def reset_pool(self) -> None:
        """Forget the pool's usage (not the members')."""
        drive(self._reset_pool(), self._run)

    def close(self) -> None:
        """Close the store if this pool created it from a URL (or by default)."""
        self.limiter.close()


class AsyncQuotaPool(AsyncSteps, QuotaCore):
    """The asyncio twin of `QuotaPool` (the same arguments; methods are coroutines)."""

    _kind = AsyncRateLimiter

    async def allocate(self, member: str, quota: int) -> None:
        """See `QuotaPool.allocate`."""
        await drive_async(self._allocate(member, quota), self._run)

    async def allocation(self, member: str) -> int:
        """See `QuotaPool.allocation`."""
        return await drive_async(self._allocation(member), self._run)

    async def hit(self, member: str, cost: float = 1) -> Decision:
        """See `QuotaPool.hit`."""
        return await drive_async(self._decide(member, cost, True), self._run)

    async def peek(self, member: str, cost: float = 1) -> Decision:
        """See `QuotaPool.peek`."""
        return await drive_async(self._decide(member, cost, False), self._run)

    async def enforce(self, member: str, cost: float = 1) -> Decision:
        """See `QuotaPool.enforce`."""
        decision = await self.hit(member, cost)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    async def reset(self, member: str) -> None:
        """See `QuotaPool.reset`."""
        await drive_async(self._reset(member), self._run)

    async def reset_pool(self) -> None:
        """See `QuotaPool.reset_pool`."""
        await drive_async(self._reset_pool(), self._run)

    async def close(self) -> None:
        """See `QuotaPool.close`."""
        await self.limiter.close()
