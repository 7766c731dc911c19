"""Leased local quota for hot keys (``RateLimiter(..., local_quota=100)``): Doorman's idea, exact.

A process takes a *batch* of units for a key from the store in one operation (a conditional hit
of ``local_quota`` units at time ``t``) and hands them out to its own requests without a round
trip, until the batch is used up or stops being valid: ``local_quota_ttl`` seconds after ``t``,
or earlier at the end of the window the batch was charged to (``fixed_window`` and
``sliding_window``: a unit is handed out in the window that counts it). A batch that is retired
with units left (expired, replaced, evicted, or the limiter closing) is settled like a
reservation (`ratekeeper.policies.reservation.Ledger`, ``commit(handed out)``): the unused units go
back to the store as if never consumed, as far as the algorithm can (a bucket up to its burst; a
window only while it still counts). Those refunds travel with the next batch fetch of any key (in
the same atomic store operation), never on a request that is served locally. A fetch with no
refund to carry, for an algorithm whose refunds do not depend on when the units were charged
(token bucket, GCRA), is a plain hit of ``local_quota`` units: the store's fastest call.

Guarantees:

- Never over-admits: a unit is handed out once, and only after the store charged it. The units
  handed out for a key never exceed the units charged for it.
- Each unit is handed out within ``local_quota_ttl`` of being charged (measured from the clock
  reading taken before the fetch, so never later), and for windows within the window charged.
  For the other algorithms the *timing* of admissions may shift by up to ``local_quota_ttl``: a
  bucket's burst bound over a short interval loosens by at most rate x ttl.
- Bounded under-admission: at any moment each process holds at most one batch per key, so at most
  ``local_quota x processes`` units are held where they are not asked for, while another process
  may be denied. Unused units are returned (above).
- The tail is exact: when the store denies a full batch but has ``remaining`` units, the fetch
  takes what remains (``min(batch, remaining)``, at least the request's cost), so a budget is
  spent to the last unit. A request whose cost exceeds the batch takes a batch of its own cost.

Denials always come from the store: a batch fetch denied with fewer than ``cost`` units remaining
is followed by a check of the request's own cost, so the denial's ``retry_after`` is that of the
request (two round trips; the over-limit cache, ``local_cache=``, answers repeats locally).

A decision served locally says: allowed; ``remaining`` = the units left in the local batch plus
the store's ``remaining`` when the batch was taken (what this process knows it may still use;
other processes may have spent some of the latter since); ``reset_after`` is the batch
decision's, less the time elapsed since.

Shared by the sync and the asyncio limiter: no I/O here. The fetch is a generator of steps
(`APPLY` a list of checks at the store, `WAIT` for another caller's fetch of the same key) that
`ratekeeper._drive` runs. Thread-safe (one lock around the bookkeeping; the store calls happen
outside it; one fetch per key at a time, the other callers wait for it). Bounded: at most
``max_keys`` batches (the oldest retired first) and `MAX_PENDING` refunds waiting to be sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from time import perf_counter
from typing import Any, TypeAlias

from ratekeeper.algorithms import INF, Rule
from ratekeeper.algorithms.base import EPS_TIME
from ratekeeper.algorithms.checks import HIT, Check
from ratekeeper.clock import Clock
from ratekeeper.decision import Decision
from ratekeeper.errors import StoreUnavailable
from ratekeeper.policies.reservation import Ledger

__all__ = [
    "APPLY",
    "DEFAULT_TTL",
    "FETCH_WAIT",
    "MAX_KEYS",
    "TAKE",
    "WAIT",
    "WINDOWED",
    "Fetch",
    "LocalQuota",
    "Outcome",
]

DEFAULT_TTL = 1.0  # seconds a batch may be handed out
MAX_KEYS = 10_000  # batches held at once; the oldest is retired (refunded) first
MAX_PENDING = 10_000  # refunds waiting for a store operation; beyond, the oldest are dropped
REFUNDS_PER_CALL = 64  # refunds sent along with one batch fetch
# Tail fetches after a full batch is denied: each failed one means another client took units in
# between, so the budget shrinks with every attempt; the bound only caps a pathological race.
TAIL_ATTEMPTS = 16
# Seconds a request waits for another caller's fetch of the same key before fetching itself (a
# store call is bounded by the store's own timeouts, far below this).
FETCH_WAIT = 5.0
# Algorithms whose units count in the window they were charged to: a batch ends with it.
WINDOWED = frozenset({"fixed_window", "sliding_window"})
# Algorithms whose refund does not depend on when the units were charged: with no refund to send,
# their batch is taken with a plain hit (the store's fastest call), which does not say the
# store's time.
TIMELESS_REFUND = frozenset({"token_bucket", "gcra"})

# Steps: APPLY a list of checks (-> Applied), TAKE (key, units) with a hit (-> Decision), WAIT for
# another caller's fetch (-> whether it ended).
APPLY, TAKE, WAIT = "apply", "take", "wait"
Step: TypeAlias = tuple[str, Any]
# What a fetch ends with: the decision for the request (None when the store failed), the store's
# failure, and the seconds spent in store calls.
Outcome: TypeAlias = tuple[Decision | None, StoreUnavailable | None, float]
Flow: TypeAlias = Generator[Step, Any, Outcome]


class Batch:
    """Units charged for one key in one store operation, and how many were handed out."""

    __slots__ = ("decision", "handed", "ledger", "size", "started", "until", "window_end")

    def __init__(
        self,
        size: float,
        handed: float,
        started: float,
        until: float,
        window_end: float,
        decision: Decision,
        ledger: Ledger,
    ) -> None:
        self.size = size
        self.handed = handed
        self.started = started  # the local clock before the fetch
        self.until = until  # handed out while started <= now < until
        self.window_end = window_end  # refunds mean nothing after it (local clock)
        self.decision = decision  # the store's answer to the batch
        self.ledger = ledger


class Fetch:
    """One caller's fetch in progress for a key: the others wait on ``event``; a denial or a
    store failure it ends with is shared with them (a failure at once: each waiter fetching in
    turn from a frozen store would wait a whole deadline after the other)."""

    __slots__ = ("denial", "error", "event")

    def __init__(self, event: Any) -> None:
        self.event = event  # threading.Event or asyncio.Event: set when the fetch ends
        self.denial: tuple[Decision, float, float] | None = None  # (decision, cost, now)
        self.error: StoreUnavailable | None = None


class LocalQuota:
    """The batches of one limiter (see the module docstring)."""

    def __init__(
        self,
        rule: Rule,
        size: int,
        ttl: float,
        new_event: Callable[[], Any],
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.rule = rule
        self.size = float(size)
        self.ttl = ttl
        self.max_keys = max_keys
        self._new_event = new_event
        self._windowed = rule.algorithm.name in WINDOWED
        self._timeless = rule.algorithm.name in TIMELESS_REFUND
        self._lock = threading.Lock()
        self._batches: dict[str, Batch] = {}  # insertion order: fetch order, the eviction order
        self._fetching: dict[str, Fetch] = {}
        self._pending: list[Check] = []  # refunds to send with the next store operation

    # -- the request path ----------------------------------------------------------------------

    def take(self, key: str, cost: float, now: float) -> Decision | None:
        """A local grant of ``cost`` from ``key``'s live batch, or ``None`` (fetch one)."""
        with self._lock:
            batch = self._batches.get(key)
            if batch is None:
                return None
            if not batch.started <= now < batch.until:  # expired, or the clock stepped back
                self._retire(key, batch, now)
                return None
            left = batch.size - batch.handed - cost
            if left < 0.0:
                return None
            batch.handed += cost
            if left == 0.0:  # used up: nothing to give back
                del self._batches[key]
        return _granted(batch.decision, left, now - batch.started)

    def fetch(self, key: str, cost: float, clock: Clock) -> Flow:
        """The steps of a request that was not served locally: wait for another caller's fetch
        of ``key``, or fetch a batch (with pending refunds) and take ``cost`` from it."""
        mine: Fetch | None = None
        while True:
            grant = self.take(key, cost, clock())
            if grant is not None:
                return grant, None, 0.0
            with self._lock:
                current = self._fetching.get(key)
                if current is None:
                    mine = self._fetching[key] = Fetch(self._new_event())
                    break
            finished = yield WAIT, current
            if current.error is not None:
                return None, current.error, 0.0
            denial = current.denial
            if denial is not None and cost >= denial[1]:
                shared = _aged_denial(denial[0], clock() - denial[2])
                if shared is not None:
                    return shared, None, 0.0
            if not finished:  # the other fetch is stuck: fetch without it
                mine = None
                break
        try:
            return (yield from self._take_batch(key, cost, clock, mine))
        finally:
            if mine is not None:
                with self._lock:
                    if self._fetching.get(key) is mine:
                        del self._fetching[key]
                mine.event.set()

    def _take_batch(self, key: str, cost: float, clock: Clock, mine: Fetch | None) -> Flow:
        size = cost if cost > self.size else self.size
        refunds = self._pending_refunds()
        elapsed = 0.0
        try:
            attempt = 0
            while True:
                started = clock()
                timer = perf_counter()
                decision: Decision
                if refunds or not self._timeless:
                    applied = yield APPLY, [*refunds, Check(key, self.rule, size, HIT)]
                    decision, at = applied.decisions[-1], applied.now
                else:
                    decision, at = (yield TAKE, (key, size)), started
                elapsed += perf_counter() - timer
                if decision.allowed:
                    refunds = []  # applied with the batch
                    grant = self._install(key, size, cost, started, at, decision)
                    return grant, None, elapsed
                attempt += 1
                if size <= cost or attempt >= TAIL_ATTEMPTS:
                    break
                # The tail: take what remains (the refunds just sent back included), or check
                # the request's own cost so that its denial is exact.
                remaining = float(decision.remaining)
                size = max(cost, min(size, remaining))
            if mine is not None:
                mine.denial = (decision, cost, started)
            if refunds:  # a denial writes nothing: send them alone, once
                timer = perf_counter()
                try:
                    yield APPLY, refunds
                except StoreUnavailable:
                    pass  # kept pending (finally)
                else:
                    refunds = []
                elapsed += perf_counter() - timer
            return decision, None, elapsed
        except StoreUnavailable as exc:
            if mine is not None:
                mine.error = exc
            return None, exc, elapsed
        finally:
            if refunds:
                self._requeue(refunds)

    def _install(
        self, key: str, size: float, cost: float, started: float, at: float, decision: Decision
    ) -> Decision:
        """Keep the batch charged at store time ``at`` (``started`` on the local clock) and hand
        out ``cost`` of it at once."""
        until = started + self.ttl
        window_end = INF
        if self._windowed:
            for limit in self.rule.limits:
                per = limit.per
                end = started + (((at + EPS_TIME) // per + 1.0) * per - at)
                window_end = min(window_end, end)
            until = min(until, window_end)
        ledger = Ledger([(key, self.rule)], [size], decision, at)
        batch = Batch(size, cost, started, until, window_end, decision, ledger)
        with self._lock:
            batches = self._batches
            old = batches.pop(key, None)
            if old is not None:
                self._retire(key, old, started, popped=True)
            # Fetch order is nearly expiry order: retire from the front what has expired, and
            # what goes over the bound.
            while batches:
                oldest = next(iter(batches))
                first = batches[oldest]
                if started < first.until and len(batches) < self.max_keys:
                    break
                self._retire(oldest, first, started)
            if size > cost:
                batches[key] = batch
        return _granted(decision, size - cost, 0.0)

    # -- refunds -------------------------------------------------------------------------------

    def _retire(self, key: str, batch: Batch, now: float, *, popped: bool = False) -> None:
        """Drop ``key``'s batch (under the lock) and queue the refund of its unused units."""
        if not popped:
            del self._batches[key]
        if batch.handed < batch.size and now < batch.window_end:
            self._pending.extend(check for _, check in batch.ledger.commit_checks(batch.handed))
            if len(self._pending) > MAX_PENDING:  # losing a refund only under-admits
                del self._pending[: len(self._pending) - MAX_PENDING]

    def _pending_refunds(self) -> list[Check]:
        with self._lock:
            refunds = self._pending[:REFUNDS_PER_CALL]
            del self._pending[:REFUNDS_PER_CALL]
        return refunds

    def _requeue(self, refunds: list[Check]) -> None:
        with self._lock:
            self._pending[:0] = refunds
            if len(self._pending) > MAX_PENDING:
                del self._pending[MAX_PENDING:]

    def flush(self, now: float) -> list[list[Check]]:
        """Retire every batch (the limiter closes): the refunds to send now, in chunks."""
        with self._lock:
            for key, batch in list(self._batches.items()):
                self._retire(key, batch, now)
            pending, self._pending = self._pending, []
        return [pending[i : i + REFUNDS_PER_CALL] for i in range(0, len(pending), REFUNDS_PER_CALL)]

    def discard(self, key: str) -> None:
        """Forget ``key``'s batch without a refund (its state at the store was reset)."""
        with self._lock:
            self._batches.pop(key, None)
            self._pending = [check for check in self._pending if check.key != key]

    def held(self, key: str) -> float:
        """Units of ``key`` held here and not handed out yet (0 without a live batch)."""
        with self._lock:
            batch = self._batches.get(key)
            return 0.0 if batch is None else batch.size - batch.handed

    def pending(self) -> int:
        """Refunds waiting to be sent."""
        return len(self._pending)

    def __len__(self) -> int:
        return len(self._batches)


def _granted(decision: Decision, left: float, elapsed: float) -> Decision:
    """The decision for a unit handed out locally (see the module docstring)."""
    return Decision(
        True,
        decision.limit,
        int(left) + decision.remaining,
        max(decision.reset_after - elapsed, 0.0),
        0.0,
        0.0,
        decision.policy,
    )


def _aged_denial(decision: Decision, elapsed: float) -> Decision | None:
    """Another caller's denial, ``elapsed`` seconds later (``None`` once it may have passed)."""
    if not 0.0 <= elapsed < decision.retry_after - EPS_TIME:
        return None
    return Decision(
        False,
        decision.limit,
        decision.remaining,
        max(decision.reset_after - elapsed, 0.0),
        decision.retry_after - elapsed,
        0.0,
        decision.policy,
        False,
        decision.details,
    )
