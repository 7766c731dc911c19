"""The in-process store: a dict, a lock and a call into the pure algorithms.

Memory stays bounded without a background thread: each (algorithm, limit) table keeps two
generations of keys. Every ``horizon`` seconds (the longest an untouched state can take to be fully
replenished) the young generation becomes the old one and the old one is dropped: a key left there
was last written more than one horizon ago, so its state is indistinguishable from a new key's.
After a quiet spell longer than a horizon, the first activity drops both generations at once.
Each operation is O(1) (the sliding log: O(entries of that key)).

Dropping is the one thing a clock that steps back could turn into extra capacity: a state dropped
while the clock ran ahead would be missing when it comes back. So a rotation also needs a horizon of
*elapsed* time on a monotonic clock (``time.monotonic``, or a test clock's ``monotonic``), read only
when the limiter's clock says a rotation is due: a clock that jumps ahead drops nothing, and after
it steps back every state is still there for the algorithms (which refill nothing on a backward
step).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from ratekeeper.algorithms import INF, State, evaluate
from ratekeeper.algorithms.checks import Check, Slot, evaluate_checks
from ratekeeper.algorithms.concurrency import acquire_lease, release_lease
from ratekeeper.clock import Clock
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit
from ratekeeper.stores.base import Applied, Rule

__all__ = ["AsyncMemoryStore", "MemoryStore"]

# How far the limiter's clock and the monotonic clock may disagree over one generation (NTP slews,
# scheduling) while the limiter's clock is still trusted to say that a generation went quiet.
CLOCK_AGREEMENT = 1.0


class _Table:
    """The states of one rule part, in two generations."""

    __slots__ = ("_horizon", "due", "last", "old", "rotated_at", "rotated_mono", "young")

    def __init__(self, horizon: float) -> None:
        self._horizon = horizon
        self.young: dict[str, State] = {}  # never holds None: a state of None is no entry
        self.old: dict[str, State] = {}
        # -inf: the first read rotates two empty generations, i.e. only starts the clocks.
        self.rotated_at = -INF
        self.rotated_mono = -INF
        self.due = -INF  # rotated_at + horizon: the clock reading from which to rotate
        self.last = -INF  # the limiter's clock at the latest write

    @property
    def horizon(self) -> float:
        return self._horizon

    @horizon.setter
    def horizon(self, horizon: float) -> None:
        self._horizon = horizon
        # before the first rotation (-inf) it stays due, whatever the horizon (-inf + inf is nan)
        self.due = self.rotated_at + horizon if self.rotated_at > -INF else -INF

    def rotate(self, now: float, mono: float) -> None:
        """Called when the limiter's clock says a horizon has passed since the last rotation."""
        elapsed = mono - self.rotated_mono
        if elapsed < self._horizon:
            # The clock ran ahead of elapsed time (it jumped): drop nothing, and check again once a
            # horizon has really passed since the last rotation.
            self.rotated_at = now - elapsed
            self.due = self.rotated_at + self._horizon
            return
        quiet = now - self.last >= self._horizon
        if quiet and abs(now - self.rotated_at - elapsed) <= CLOCK_AGREEMENT:
            self.young = {}  # nothing written for a horizon: both generations are replenished
        self.old = self.young
        self.young = {}
        self.rotated_at = now
        self.rotated_mono = mono
        self.due = now + self._horizon

    def get(self, key: str, now: float, mono: Clock) -> State:
        if now >= self.due:
            self.rotate(now, mono())
        state = self.young.get(key)
        if state is None:
            return self.old.get(key)
        return state

    def put(self, key: str, state: State, now: float) -> None:
        if state is None:
            self.young.pop(key, None)
            self.old.pop(key, None)
        else:
            self.young[key] = state
            self.last = now

    def discard(self, key: str) -> None:
        self.young.pop(key, None)
        self.old.pop(key, None)

    def __len__(self) -> int:
        return len(self.young.keys() | self.old.keys())


# What `MemoryStore.hit` needs for a single-limit rule, looked up once per rule: its table, the
# algorithm's transition and the limit. ``None`` for a multi-limit rule.
_Fast: TypeAlias = tuple[
    _Table, Callable[[State, float, float, Limit], tuple[State, Decision]], Limit
]


class MemoryStore:
    """Thread-safe in-memory store (``memory://``). Safe under asyncio: no call ever waits.

    ``monotonic`` is the elapsed-time clock that gates eviction (see the module docstring); by
    default ``time.monotonic``, or the ``monotonic`` of the test clock of the first limiter that
    uses this store (:meth:`follow`).
    """

    def __init__(self, monotonic: Clock | None = None) -> None:
        self._monotonic: Clock = monotonic or time.monotonic
        self._follows = monotonic is not None
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}
        self._by_rule: dict[tuple[str, ...], list[_Table]] = {}
        self._leases = _Table(0.0)
        # The last rule seen and its fast-path entry, as one tuple so that threads read a
        # consistent pair without the lock. A limiter hits with the same rule every time.
        self._last: tuple[Rule | None, _Fast | None] = (None, None)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStore:
        """A new store for ``memory://`` (the URL carries nothing; ``options`` go to the
        constructor)."""
        return cls(**options)

    def follow(self, clock: Clock) -> None:
        """Take elapsed time from ``clock.monotonic`` when the clock has one (a test clock) and
        this store was not given its own: then eviction follows the test's time."""
        monotonic = getattr(clock, "monotonic", None)
        if monotonic is not None and not self._follows:
            self._monotonic, self._follows = monotonic, True

    def _tables_of(self, rule: Rule) -> list[_Table]:
        tables = self._by_rule.get(rule.parts)
        if tables is None:
            algorithm = rule.algorithm
            tables = []
            for part, limit in zip(rule.parts, rule.limits, strict=True):
                table = self._tables.get(part)
                if table is None:
                    table = self._tables[part] = _Table(algorithm.horizon(limit))
                tables.append(table)
            self._by_rule[rule.parts] = tables
        return tables

    def _fast(self, rule: Rule) -> _Fast | None:
        """The fast-path entry of ``rule`` (creating its tables), remembered as the last rule."""
        with self._lock:
            tables = self._tables_of(rule)
        fast: _Fast | None = None
        if len(tables) == 1:
            fast = (tables[0], rule.algorithm.apply, rule.limits[0])
        self._last = (rule, fast)
        return fast

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        last_rule, fast = self._last
        if last_rule is not rule:
            fast = self._fast(rule)
        if fast is None:
            return self._hit_all(key, rule, cost, now)
        # One limit, the common case: `_Table.get` and `put` inlined (this runs on every request).
        table, apply, limit = fast
        lock = self._lock
        lock.acquire()  # not `with`: its __enter__/__exit__ calls cost more than the dict work
        try:
            if now >= table.due:
                table.rotate(now, self._monotonic())
            young = table.young
            state = young.get(key)
            if state is None:
                state = table.old.get(key)
            new, decision = apply(state, now, cost, limit)
            if new is not state:
                if new is None:
                    table.discard(key)
                else:
                    young[key] = new
                    table.last = now
            return decision
        finally:
            lock.release()

    def _hit_all(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        """Several limits: all-or-nothing."""
        with self._lock:
            tables = self._tables_of(rule)
            states = [table.get(key, now, self._monotonic) for table in tables]
            news, decision = evaluate(rule.algorithm, rule.limits, states, now, cost)
            if news is not None:
                for table, new in zip(tables, news, strict=True):
                    table.put(key, new, now)
            return decision

    def apply_checks(self, checks: Sequence[Check], now: float, write: bool = True) -> Applied:
        """Several checks, all-or-nothing, under the lock (`ratekeeper.algorithms.checks`)."""
        with self._lock:
            mono = self._monotonic
            tables: dict[Slot, _Table] = {}
            states: dict[Slot, State] = {}
            for check in checks:
                for part, table in zip(check.rule.parts, self._tables_of(check.rule), strict=True):
                    slot = (check.key, part)
                    if slot not in tables:
                        tables[slot] = table
                        states[slot] = table.get(check.key, now, mono)
            writes, decisions, holds = evaluate_checks(checks, states, now)
            if writes and write:
                for slot, state in writes.items():
                    table = tables[slot]
                    # A state in debt takes longer than the horizon to replenish: the table keeps
                    # its states that long from now on (debts are rare; eviction only waits).
                    if holds[slot] > table.horizon:
                        table.horizon = holds[slot]
                    table.put(slot[0], state, now)
            return Applied(decisions, now)

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        with self._lock:
            mono = self._monotonic
            states = [table.get(key, now, mono) for table in self._tables_of(rule)]
            return evaluate(rule.algorithm, rule.limits, states, now, cost)[1]

    def reset(self, key: str, rule: Rule) -> None:
        with self._lock:
            for table in self._tables_of(rule):
                table.discard(key)
            self._leases.discard(key)

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        with self._lock:
            leases = self._leases
            leases.horizon = max(leases.horizon, ttl)
            state = leases.get(key, now, self._monotonic)
            new, wait = acquire_lease(state, now, lease_id, limit, ttl)
            if not wait:
                leases.put(key, new, now)
            return wait

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        with self._lock:
            leases = self._leases
            state = release_lease(leases.get(key, now, self._monotonic), now, lease_id)
            leases.put(key, state, now)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._tables.clear()
            self._by_rule.clear()
            self._leases = _Table(0.0)
            self._last = (None, None)

    def __len__(self) -> int:
        """How many (rule part, key) states are held, leases included."""
        with self._lock:
            return sum(len(table) for table in self._tables.values()) + len(self._leases)


class AsyncMemoryStore:
    """The asyncio face of a :class:`MemoryStore` (pass one to share state with sync code)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.sync = store if store is not None else MemoryStore()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncMemoryStore:
        return cls(MemoryStore(**options))

    def follow(self, clock: Clock) -> None:
        self.sync.follow(clock)

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self.sync.hit(key, rule, cost, now)

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self.sync.peek(key, rule, cost, now)

    async def apply_checks(
        self, checks: Sequence[Check], now: float, write: bool = True
    ) -> Applied:
        return self.sync.apply_checks(checks, now, write)

    async def reset(self, key: str, rule: Rule) -> None:
        self.sync.reset(key, rule)

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        return self.sync.acquire_lease(key, lease_id, limit, ttl, now)

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        self.sync.release_lease(key, lease_id, now)

    async def ping(self) -> None:
        self.sync.ping()

    async def close(self) -> None:
        self.sync.close()

    def __len__(self) -> int:
        return len(self.sync)
