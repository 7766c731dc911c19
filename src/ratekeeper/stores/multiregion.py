"""Multi-region stores: decide in the local region, replicate usage to the others asynchronously.

``MultiRegionStore(local=store, remotes=[store, ...])`` (and its asyncio twin) takes store
objects, typically one Redis per region, the local one first. A decision is the local store's
decision and nothing else: it never waits on another region, so its latency is the local store's.
Each admitted request is then charged, in the background, to every remote store (the same key,
rule, cost and clock reading), so that every region's store counts the whole world's usage,
late by the replication lag. Remote regions do the same towards this one.

Charges are unconditional where the remote store can apply one (`CheckStore.apply_checks`
with a ``CHARGE``: memory, PostgreSQL, NATS, Redis, DynamoDB): the remote's budget may go into
debt, which its region then waits off, so every admission anywhere is counted everywhere once it
arrives. On a store that can only ``hit`` (a third-party store without ``apply_checks``) a charge
is a conditional hit, refused when that store counts the limit as used up already, and a refused
charge is lost: under sustained demand above the limit the regions then barely see each other
(measured in the README).

Guarantee with unconditional charges (the one Upstash's multi-region mode gives, measured in the
README): every region admits only what its own store allows, and its store counts every region's
admissions once they arrive. Over-admission is what the other regions admitted during the lag,
an amount, not a rate: about (regions - 1) x r x l at a limit's rate r and a lag l, and when
every region bursts at once, up to (regions - 1) x burst more. No under-admission: a region
waits off exactly the debt of what was admitted.

- ``peek`` is local. ``reset`` is local at once and replicated like a charge.
- Concurrency leases (``max_concurrent``) are per region: a lease is local, never replicated.
- A remote that is down keeps its charges in a bounded backlog (``max_backlog`` per remote, the
  oldest dropped first) retried every ``retry_interval`` seconds; a charge older than the
  longest period of its limits has no effect left and is dropped. A region that returns catches
  up from the backlog.
- If the local store is down, the local store's errors are the decision's
  (`StoreUnavailable`, then the limiter's ``on_store_error``): no other region is asked.
- Consecutive charges of one key and rule wait for the remote together and are applied as one
  charge of their summed cost (one cross-region round trip per batch, whatever the rate).
- Remote stores are only used in the background: give them timeouts above the cross-region
  round trip, connection setup included (a Redis connection takes several round trips), e.g.
  ``RedisStore.from_url(url, socket_timeout=2, socket_connect_timeout=2)``.
- Time: a remote store built to trust the caller's clock replays a charge at its original
  time; one using its server clock (Redis' default) charges it on arrival, which delays its
  refill by the lag.

:meth:`MultiRegionStore.replication` reports each remote's backlog, lag and counters;
:meth:`MultiRegionStore.flush` waits until every backlog is empty (tests, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ratekeeper.algorithms.checks import CHARGE, Check
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.base import AsyncCheckStore, AsyncStore, CheckStore, Rule, Store

__all__ = ["AsyncMultiRegionStore", "MultiRegionStore", "RemoteStatus"]

DEFAULT_BACKLOG = 100_000  # charges kept per remote while it is unreachable
DEFAULT_RETRY = 0.25  # seconds between attempts at a remote that failed
MERGE_MAX = 1000  # requests applied to a remote as one hit, at most
_clock = time.monotonic


@dataclass(frozen=True, slots=True)
class Charge:
    """Admitted requests (``count`` of them, ``cost`` in all; a reset when ``cost is None``) to
    apply to a remote store."""

    key: str
    rule: Rule
    cost: float | None
    now: float  # the limiter's clock reading (the latest, for merged requests)
    made: float  # monotonic seconds when it was made (the oldest)
    count: int = 1

    @property
    def horizon(self) -> float:
        """Seconds after which the charge has no effect left on any of its limits."""
        return max(limit.per for limit in self.rule.limits)

    def check(self) -> Check:
        """The unconditional charge of these requests (the remote's budget may go into debt)."""
        assert self.cost is not None
        return Check(self.key, self.rule, self.cost, CHARGE)

    def joins(self, other: Charge) -> bool:
        """Whether ``other`` (made later) can be applied together with this one, as one hit."""
        return (
            self.cost is not None
            and other.cost is not None
            and other.key == self.key
            and other.rule.parts == self.rule.parts
        )


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """One remote's replication: pending charges, the age of the oldest (seconds), charges
    applied, refused there (its store was already full), dropped (backlog full, or too old),
    and failed attempts."""

    pending: int
    lag: float
    applied: int
    refused: int
    dropped: int
    failures: int


class _Backlog:
    """A remote's pending charges, oldest first (no I/O: both drivers use it under their own
    lock or loop)."""

    __slots__ = ("applied", "charges", "dropped", "failures", "in_flight", "limit", "refused")

    def __init__(self, limit: int) -> None:
        self.charges: deque[Charge] = deque()
        self.in_flight: Charge | None = None  # taken, being applied
        self.limit = limit
        self.applied = self.refused = self.dropped = self.failures = 0

    def add(self, charge: Charge) -> None:
        if len(self.charges) >= self.limit:
            self.charges.popleft()
            self.dropped += 1
        self.charges.append(charge)

    def take(self) -> Charge | None:
        """The oldest charge that still has an effect (older ones are dropped), merged with the
        charges of the same key and rule right behind it: one round trip for a hot key's burst,
        not one per request (a cross-region round trip would otherwise cap replication)."""
        now = _clock()
        charges = self.charges
        head: Charge | None = None
        while charges:
            charge = charges[0]
            if now - charge.made > charge.horizon:
                charges.popleft()
                self.dropped += charge.count
                continue
            if head is None:
                head = charges.popleft()
            elif head.joins(charge) and head.count < MERGE_MAX:
                charges.popleft()
                assert head.cost is not None and charge.cost is not None
                head = Charge(
                    head.key,
                    head.rule,
                    head.cost + charge.cost,
                    max(head.now, charge.now),
                    head.made,
                    head.count + charge.count,
                )
            else:
                break
        self.in_flight = head
        return head

    def give_back(self, charge: Charge) -> None:
        """A charge whose attempt failed goes back to the front (unless the backlog filled)."""
        self.failures += 1
        self.in_flight = None
        if len(self.charges) < self.limit:
            self.charges.appendleft(charge)
        else:
            self.dropped += charge.count

    def settled(self, charge: Charge, result: Decision | None) -> None:
        self.in_flight = None
        if result is not None and not result.allowed:
            self.refused += charge.count
        else:
            self.applied += charge.count

    def status(self) -> RemoteStatus:
        charges = [*([self.in_flight] if self.in_flight else []), *self.charges]
        lag = _clock() - min(charge.made for charge in charges) if charges else 0.0
        pending = sum(charge.count for charge in charges)
        return RemoteStatus(pending, lag, self.applied, self.refused, self.dropped, self.failures)


def _check(remotes: list[Any], max_backlog: int, retry_interval: float) -> None:
    if not remotes:
        raise ConfigError("a multi-region store needs at least one remote store")
    if not max_backlog >= 1 or not retry_interval > 0:
        raise ConfigError("max_backlog must be >= 1 and retry_interval > 0")


S = TypeVar("S", bound=Store | AsyncStore)


class _Regions(Generic[S]):
    """What both faces keep: the local store, the remotes and one backlog per remote."""

    def __init__(self, local: S, remotes: list[S], max_backlog: int, retry_interval: float) -> None:
        remotes = list(remotes)
        _check(remotes, max_backlog, retry_interval)
        self.local: S = local
        self.remotes: list[S] = remotes
        self.retry_interval = float(retry_interval)
        self._backlogs = [_Backlog(max_backlog) for _ in remotes]


class MultiRegionStore(_Regions[Store]):
    """Decide on ``local``; replicate admitted usage to ``remotes`` in background threads (one
    per remote, so that a slow region delays only its own charges). See the module docstring."""

    def __init__(
        self,
        local: Store,
        remotes: list[Store],
        *,
        max_backlog: int = DEFAULT_BACKLOG,
        retry_interval: float = DEFAULT_RETRY,
    ) -> None:
        super().__init__(local, remotes, max_backlog, retry_interval)
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._pump, args=(i,), name=f"ratekeeper-region-{i}")
            for i in range(len(remotes))
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def _enqueue(self, charge: Charge) -> None:
        with self._cond:
            for backlog in self._backlogs:
                backlog.add(charge)
            self._cond.notify_all()

    def _pump(self, index: int) -> None:
        backlog, remote = self._backlogs[index], self.remotes[index]
        cond = self._cond
        while True:
            with cond:
                charge = backlog.take()
                while charge is None and not self._closed:
                    cond.notify_all()  # the backlog is empty: a flush may be waiting for that
                    cond.wait()
                    charge = backlog.take()
                if charge is None:
                    return
            result: Decision | None = None
            try:
                if charge.cost is None:
                    remote.reset(charge.key, charge.rule)
                elif isinstance(remote, CheckStore):
                    remote.apply_checks([charge.check()], charge.now)
                else:
                    result = remote.hit(charge.key, charge.rule, charge.cost, charge.now)
            except Exception:  # StoreUnavailable or a driver's error: retry later
                with cond:
                    backlog.give_back(charge)
                    cond.notify_all()
                    resume = _clock() + self.retry_interval
                    while not self._closed and (left := resume - _clock()) > 0:
                        cond.wait(left)
                continue
            with cond:
                backlog.settled(charge, result)
                cond.notify_all()

    # -- Store --------------------------------------------------------------------------------

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        decision = self.local.hit(key, rule, cost, now)
        if decision.allowed and cost > 0:
            self._enqueue(Charge(key, rule, cost, now, _clock()))
        return decision

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self.local.peek(key, rule, cost, now)

    def reset(self, key: str, rule: Rule) -> None:
        self.local.reset(key, rule)
        self._enqueue(Charge(key, rule, None, 0.0, _clock()))

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        return self.local.acquire_lease(key, lease_id, limit, ttl, now)

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        self.local.release_lease(key, lease_id, now)

    def ping(self) -> None:
        """The local store's health: decisions need nothing else."""
        self.local.ping()

    # -- replication --------------------------------------------------------------------------

    def replication(self) -> list[RemoteStatus]:
        """Each remote's backlog, lag and counters, in the order of ``remotes``."""
        with self._cond:
            return [backlog.status() for backlog in self._backlogs]

    def flush(self, timeout: float) -> bool:
        """Wait until every charge made so far reached every remote (or was dropped); False when
        ``timeout`` seconds passed first."""
        give_up = _clock() + timeout
        with self._cond:
            while any(b.charges or b.in_flight for b in self._backlogs):
                left = give_up - _clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Stop replicating (pending charges are dropped: :meth:`flush` first to deliver them)
        and close every store."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for backlog in self._backlogs:
                backlog.charges.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=1.0)
        for store in (self.local, *self.remotes):
            with contextlib.suppress(StoreUnavailable):
                store.close()


class AsyncMultiRegionStore(_Regions[AsyncStore]):
    """The asyncio twin of :class:`MultiRegionStore`: the same model, one replication task per
    remote in the event loop of the first decision (started again in a later loop)."""

    def __init__(
        self,
        local: AsyncStore,
        remotes: list[AsyncStore],
        *,
        max_backlog: int = DEFAULT_BACKLOG,
        retry_interval: float = DEFAULT_RETRY,
    ) -> None:
        super().__init__(local, remotes, max_backlog, retry_interval)
        self._wake: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _enqueue(self, charge: Charge) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new loop: the old tasks died with theirs
            self._loop = loop
            self._wake = [asyncio.Event() for _ in self.remotes]
            self._tasks = [loop.create_task(self._pump(i)) for i in range(len(self.remotes))]
        for backlog, wake in zip(self._backlogs, self._wake, strict=True):
            backlog.add(charge)
            wake.set()

    async def _pump(self, index: int) -> None:
        backlog, remote, wake = self._backlogs[index], self.remotes[index], self._wake[index]
        while not self._closed:
            charge = backlog.take()
            if charge is None:
                wake.clear()
                await wake.wait()
                continue
            result: Decision | None = None
            try:
                if charge.cost is None:
                    await remote.reset(charge.key, charge.rule)
                elif isinstance(remote, AsyncCheckStore):
                    await remote.apply_checks([charge.check()], charge.now)
                else:
                    result = await remote.hit(charge.key, charge.rule, charge.cost, charge.now)
            except Exception:  # StoreUnavailable or a driver's error: retry later
                backlog.give_back(charge)
                await asyncio.sleep(self.retry_interval)
                continue
            backlog.settled(charge, result)

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        decision = await self.local.hit(key, rule, cost, now)
        if decision.allowed and cost > 0:
            self._enqueue(Charge(key, rule, cost, now, _clock()))
        return decision

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self.local.peek(key, rule, cost, now)

    async def reset(self, key: str, rule: Rule) -> None:
        await self.local.reset(key, rule)
        self._enqueue(Charge(key, rule, None, 0.0, _clock()))

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        return await self.local.acquire_lease(key, lease_id, limit, ttl, now)

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        await self.local.release_lease(key, lease_id, now)

    async def ping(self) -> None:
        await self.local.ping()

    def replication(self) -> list[RemoteStatus]:
        return [backlog.status() for backlog in self._backlogs]

    async def flush(self, timeout: float) -> bool:
        """:meth:`MultiRegionStore.flush`."""
        give_up = _clock() + timeout
        while any(b.charges or b.in_flight for b in self._backlogs):
            if _clock() >= give_up:
                return False
            await asyncio.sleep(min(self.retry_interval, 0.01))
        return True

    async def close(self) -> None:
        self._closed = True
        for backlog in self._backlogs:
            backlog.charges.clear()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if self._loop is asyncio.get_running_loop():  # another loop's tasks died with it
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
        for store in (self.local, *self.remotes):
            with contextlib.suppress(StoreUnavailable):
                await store.close()
