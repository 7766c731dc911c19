"""What `RateLimiter` and `AsyncRateLimiter` share: everything that is not waiting or I/O.

Argument checks, the store failure policy, and `acquire`'s waiting logic, written as a generator of
steps (take a lease, hit, sleep, release) that `ratekeeper._drive` runs blocking or with ``await``.
The two limiters themselves are one source: ``_async_limiter.py`` is written by hand and
``_sync_limiter.py`` generated from it (``scripts/unasync.py``; ``--check`` in ``scripts/test``).
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import time
import uuid
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from ratekeeper._local_cache import DEFAULT_SIZE, OverLimitCache
from ratekeeper._local_quota import DEFAULT_TTL, LocalQuota, Outcome
from ratekeeper.algorithms import INF, Algorithm
from ratekeeper.algorithms.checks import HIT as CHECK_HIT
from ratekeeper.algorithms.checks import Check
from ratekeeper.clock import Clock, default_clock
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, RateLimitExceeded, RateLimitTimeout, StoreUnavailable
from ratekeeper.events import Event, EventKind, Observer, Result
from ratekeeper.limits import MAX_AMOUNT, Limit, to_limits
from ratekeeper.metrics import Counters, LimiterMetrics
from ratekeeper.policies.priorities import check_priorities, share_of
from ratekeeper.stores import AsyncStore, Rule, Store

__all__ = [
    "FAST_COSTS",
    "HIT",
    "LEASE",
    "RELEASE",
    "SLEEP",
    "LimiterCore",
    "Limits",
    "OnStoreError",
    "AsyncAcquire",
    "PermitBase",
]

log = logging.getLogger("ratekeeper")

Limits: TypeAlias = str | Limit | Sequence[Limit]
OnStoreError = Literal["raise", "allow", "deny"]
FAST_COSTS = frozenset({int, float})  # cost types checked inline on the hot path
_LOG_EVERY = 60.0  # seconds between two warnings about the same unreachable store
# A lease shorter than a millisecond expires before its holder starts (stores keep milliseconds);
# one longer than ten years overflows what Redis and PostgreSQL can hold as an expiry.
LEASE_TTL_MIN = 0.001
LEASE_TTL_MAX = 10 * 366 * 86400.0

# The steps of the acquire flow.
LEASE, HIT, SLEEP, RELEASE = "lease", "hit", "sleep", "release"
Step: TypeAlias = tuple[str, Any]
Flow: TypeAlias = Generator[Step, Any, tuple[Decision, str | None]]


class LimiterCore:
    """What the sync and async limiters share: configuration, checks and decisions."""

    store: Any  # a Store or an AsyncStore: each twin declares which

    def __init__(
        self,
        limits: Limits,
        *,
        algorithm: str | Algorithm = "token_bucket",
        store: str | Store | AsyncStore | None = None,
        clock: Clock | None = None,
        max_concurrent: int | None = None,
        lease_ttl: float = 60.0,
        on_store_error: OnStoreError = "raise",
        local_cache: bool | int = False,
        name: str | None = None,
        observers: Iterable[Observer] = (),
        shadow: bool = False,
        shadow_limits: Limits | None = None,
        priorities: Mapping[str, float] | None = None,
        local_quota: int | None = None,
        local_quota_ttl: float = DEFAULT_TTL,
    ) -> None:
        self.rule = Rule(algorithm, to_limits(limits))  # type: ignore[arg-type]
        self.limits: tuple[Limit, ...] = self.rule.limits
        self.algorithm = self.rule.algorithm.name
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        self.name: str = name if name is not None else "; ".join(map(str, self.limits))
        self._counters = Counters()
        # The per-decision counters, as attributes: one lookup less on the hot path.
        self._n_allowed = self._counters.allowed
        self._n_denied = self._counters.denied
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a callable returning seconds, got {clock!r}")
        self.clock: Clock = clock or default_clock()
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent <= 0
        ):
            raise ConfigError(f"max_concurrent must be a positive integer, got {max_concurrent!r}")
        self.max_concurrent = max_concurrent
        if (
            isinstance(lease_ttl, bool)
            or not isinstance(lease_ttl, int | float)
            or not LEASE_TTL_MIN <= lease_ttl <= LEASE_TTL_MAX
        ):
            raise ConfigError(
                f"lease_ttl must be a number of seconds from {LEASE_TTL_MIN} to {LEASE_TTL_MAX:.0f}"
                f" (ten years), got {lease_ttl!r}"
            )
        self.lease_ttl = float(lease_ttl)
        if on_store_error not in ("raise", "allow", "deny"):
            raise ConfigError(
                f"on_store_error must be 'raise', 'allow' or 'deny', got {on_store_error!r}"
            )
        self.on_store_error = on_store_error
        if isinstance(local_cache, bool):
            size = DEFAULT_SIZE if local_cache else 0
        elif isinstance(local_cache, int) and local_cache > 0:
            size = local_cache
        else:
            raise ConfigError(
                f"local_cache must be True, False or a positive number of keys, got {local_cache!r}"
            )
        # The exact over-limit cache (see ratekeeper._local_cache): denials answered locally.
        self._cache = OverLimitCache(size) if size else None
        if not isinstance(shadow, bool):
            raise ConfigError(f"shadow must be True or False, got {shadow!r}")
        self.shadow = shadow
        # Candidate limits, evaluated beside the enforced ones on their own state, never denying.
        self.shadow_rule = (
            None
            if shadow_limits is None
            else Rule(self.rule.algorithm, to_limits(shadow_limits), namespace="shadow:")  # type: ignore[arg-type]
        )
        # Priority classes (ratekeeper.policies.priorities): a hit of a class with a share below
        # 1 (a plain hit, too, when the "default" class has one) goes through apply_checks.
        self.priorities = check_priorities(priorities)
        self._classed = share_of(self.priorities, None) < 1.0
        # Leased local quota (ratekeeper._local_quota): batches of units handed out locally.
        self._quota = self._local_quota(local_quota, local_quota_ttl)
        self._observers: list[Observer] = []
        for observer in observers:
            self.add_observer(observer)
        self._replan()
        self._last_observer_error = -INF
        self._owns_store = store is None or isinstance(store, str)
        self._last_warning = -INF
        self._open(store)
        self.store_kind = store_kind(self.store)
        if self.priorities is not None or self._quota is not None:
            self._checks_store()
        supported = getattr(self.store, "algorithms", None)  # stores with server-side ports
        if supported is not None and self.rule.algorithm.name not in supported:
            raise ConfigError(
                f"{type(self.store).__name__} cannot run algorithm {self.algorithm!r}; "
                f"it runs {', '.join(sorted(supported))}"
            )

    def _local_quota(self, size: object, ttl: object) -> LocalQuota | None:
        """The batches of ``local_quota=`` (checked, and refused beside what needs every request
        at the store), or ``None``."""
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not 0 < ttl < INF  # `not <` also refuses NaN
        ):
            raise ConfigError(
                f"local_quota_ttl must be a positive finite number of seconds, got {ttl!r}"
            )
        if size is None:
            return None
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_AMOUNT:
            huge = isinstance(size, int) and size.bit_length() > 64  # its repr may be refused
            raise ConfigError(
                "local_quota must be None or a positive number of units per batch, at most 2**53, "
                f"got {'a number over 2**64' if huge else repr(size)}"
            )
        conflicts = [
            name
            for name, used in (
                ("max_concurrent", self.max_concurrent is not None),
                ("shadow", self.shadow),
                ("shadow_limits", self.shadow_rule is not None),
                ("priorities", self.priorities is not None),
                ("algorithm='leaky_bucket'", self.algorithm == "leaky_bucket"),
            )
            if used
        ]
        if conflicts:
            raise ConfigError(
                f"local_quota cannot be combined with {', '.join(conflicts)} (each needs every "
                "request at the store; leaky_bucket's delay is per request)"
            )
        return LocalQuota(self.rule, size, float(ttl), self._new_event)

    _new_event: Callable[[], Any]  # what a fetch's waiters wait on: each twin sets it

    def _open(self, store: Any) -> None:
        """Set ``self.store`` (from a URL, an object, or a new memory store) and ``self._sleep``."""
        raise NotImplementedError

    def _opened(
        self,
        store: Any,
        protocol: type[Any],
        memory: Callable[[], Any],
        from_url: Callable[[str], Any],
    ) -> Any:
        """The store a limiter uses: a new memory store, one built from a URL, or the object given
        if it is a store of the limiter's kind (``protocol``: `Store` or `AsyncStore`)."""
        if store is None:
            store = memory()
        elif isinstance(store, str):
            store = from_url(store)
        elif not isinstance(store, protocol) or (
            inspect.iscoroutinefunction(store.hit) != (protocol is AsyncStore)
        ):
            kind = "an asyncio store" if protocol is AsyncStore else "a synchronous Store"
            raise ConfigError(f"store must be a URL or {kind}, got {store!r}")
        follow = getattr(store, "follow", None)  # memory stores take elapsed time from a test clock
        if follow is not None:
            follow(self.clock)
        return store

    def __repr__(self) -> str:
        limits = "; ".join(map(str, self.limits))
        return f"{type(self).__name__}({limits!r}, algorithm={self.algorithm!r})"

    @staticmethod
    def _checked(key: object, cost: object) -> tuple[str, float]:
        """The slow path of argument checking: a clear error, or the normalized cost."""
        if not isinstance(key, str):
            raise ValueError(f"key must be a str, got {type(key).__name__}: {key!r}")
        if isinstance(cost, bool) or not isinstance(cost, numbers.Real | Decimal):
            raise ValueError(f"cost must be a number, got {type(cost).__name__}: {cost!r}")
        value = float(cost)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
        return key, value

    @property
    def plain(self) -> bool:
        """No cache, observer or shadow evaluation: ``hit`` takes its shortest path."""
        return self._plain

    def _replan(self) -> None:
        self._plain = (
            self._cache is None
            and not self._observers
            and not self.shadow
            and self.shadow_rule is None
            and not self._classed
            and self._quota is None
        )

    def _checks_store(self) -> Any:
        """The store, if it can apply several checks at once (priorities, reservations, chains);
        else `ConfigError`."""
        if not callable(getattr(self.store, "apply_checks", None)):
            raise ConfigError(
                f"{type(self.store).__name__} cannot apply several checks at once (apply_checks):"
                " priorities, reservations and chains need it"
            )
        return self.store

    def _check(self, key: str, cost: float, priority: str | None, mode: int = CHECK_HIT) -> Check:
        """This limiter's check of ``key`` (a priority class's share applied)."""
        return Check(key, self.rule, cost, mode, share_of(self.priorities, priority))

    def _settle_failed(self, exc: StoreUnavailable) -> None:
        """A reservation could not be settled: raise with ``on_store_error="raise"``, else log
        (the settlement is dropped, as a fallback decision charges nothing)."""
        if self.on_store_error == "raise":
            raise exc
        now = time.monotonic()
        if now - self._last_warning >= _LOG_EVERY:
            self._last_warning = now
            log.warning("rate limit store unavailable (%s); a reservation was not settled", exc)

    def add_observer(self, observer: Observer) -> None:
        """Send this limiter's events to ``observer`` too (see `ratekeeper.events`)."""
        if not callable(getattr(observer, "observe", None)):
            raise ConfigError(f"an observer needs an observe(event) method, got {observer!r}")
        if observer not in self._observers:
            self._observers.append(observer)
        self._replan()

    def _emit(
        self,
        kind: EventKind,
        key: str,
        result: Result,
        decision: Decision | None,
        store_seconds: float = 0.0,
        wait_seconds: float = 0.0,
        error: str = "",
        candidate: Decision | None = None,
    ) -> None:
        """Deliver one event to every observer; one that raises is logged, never propagated."""
        event = Event(
            kind,
            self.name,
            self.algorithm,
            self.store_kind,
            key,
            result,
            decision,
            time.time(),
            store_seconds,
            wait_seconds,
            self._counters.in_flight,
            error,
            result == "shadow_denied",
            candidate,
        )
        for observer in self._observers:
            try:
                observer.observe(event)
            except Exception:
                now = time.monotonic()
                if now - self._last_observer_error >= _LOG_EVERY:
                    self._last_observer_error = now
                    log.exception("ratekeeper: observer %r raised; skipped", observer)

    def _settle(
        self,
        key: str,
        decision: Decision | None,
        error: StoreUnavailable | None,
        candidate: Decision | None,
        store_seconds: float,
    ) -> Decision:
        """Everything after the store answered (or failed), on the watched path: the fallback,
        shadow mode, candidate limits, counting and events."""
        if error is not None:
            try:
                decision = self._fallback(error)
            except StoreUnavailable:
                if self._observers:
                    self._emit("hit", key, "error", None, store_seconds, error=_error_word(error))
                raise
            if self._observers:
                self._emit("hit", key, "error", decision, store_seconds, error=_error_word(error))
            return decision
        assert decision is not None
        result: Result
        if not decision.allowed and self.shadow:
            result, decision = "shadow_denied", _shadowed(decision)
        elif candidate is not None and decision.allowed and not candidate.allowed:
            result = "shadow_denied"
        else:
            result = "allowed" if decision.allowed else "denied"
        next(
            self._counters.shadow_denied
            if result == "shadow_denied"
            else self._n_allowed
            if result == "allowed"
            else self._n_denied
        )
        if self._observers:
            self._emit("hit", key, result, decision, store_seconds, candidate=candidate)
        return decision

    def _local_answer(self, key: str, cost: float) -> Decision | None:
        """With ``local_quota``: a grant from the key's live batch, or the over-limit cache's
        denial (counted and reported), else ``None`` (fetch)."""
        now = self.clock()
        grant = self._quota.take(key, cost, now)  # type: ignore[union-attr]
        if grant is not None:
            next(self._n_allowed)
            if self._observers:
                self._emit("hit", key, "allowed", grant)
            return grant
        cache = self._cache
        denial = None if cache is None else cache.check(key, cost, now)
        if denial is not None:
            return self._settle(key, denial, None, None, 0.0)
        return None

    def _fetched(self, key: str, cost: float, now: float, outcome: Outcome) -> Decision:
        """The decision of a request that fetched a batch (or waited for one)."""
        decision, error, store_seconds = outcome
        cache = self._cache
        if cache is not None and decision is not None and not decision.allowed:
            cache.record(key, cost, now, decision)
        return self._settle(key, decision, error, None, store_seconds)

    def _refunds_lost(self, exc: StoreUnavailable) -> None:
        """Closing: the unused units of local batches could not be given back (logged)."""
        log.warning("rate limit store unavailable (%s); unused local quota not returned", exc)

    def _peeked(self, decision: Decision | None, error: StoreUnavailable | None) -> Decision:
        """What ``peek`` answers: what ``hit`` would, counting and reporting nothing."""
        if error is not None:
            return self._fallback(error, counted=False)
        assert decision is not None
        return _shadowed(decision) if self.shadow and not decision.allowed else decision

    def metrics(self) -> LimiterMetrics:
        """What this limiter has done so far (exact across threads)."""
        return self._counters.snapshot(self.name)

    def _fallback(self, exc: StoreUnavailable, *, counted: bool = True) -> Decision:
        """The decision given when the store is unreachable, by ``on_store_error``."""
        if counted:
            next(self._counters.store_errors)
        if self.on_store_error == "raise":
            raise exc
        allow = self.on_store_error == "allow" or self.shadow  # shadow mode never denies
        now = time.monotonic()
        if now - self._last_warning >= _LOG_EVERY:
            self._last_warning = now
            log.warning(
                "rate limit store unavailable (%s); %s requests until it returns",
                exc,
                "allowing" if allow else "denying",
            )
        limit = self.limits[0]
        if allow:
            return Decision(True, limit.amount, limit.amount, 0.0, 0.0, 0.0, limit, True)
        return Decision(False, limit.amount, 0, 1.0, 1.0, 0.0, limit, True)

    def _busy(self, wait: float) -> Decision:
        """A denial by the concurrency cap."""
        limit = self.limits[0]
        return Decision(False, limit.amount, 0, wait, wait, 0.0, limit)

    def _acquire_flow(self, key: str, cost: float, timeout: float | None) -> Flow:
        """Wait for a concurrency slot (if capped), then for the rate limit. Never busy-loops:
        it sleeps ``retry_after`` (or ``delay``), and polls leases with a growing pause."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
        ):  # `not >=` also refuses NaN, which would never time out
            raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
        start = self.clock()
        try:
            result = yield from self._wait_flow(key, cost, timeout, start)
        except RateLimitTimeout as exc:
            waited = self.clock() - start
            self._counters.waited(waited, acquired=False)
            if self._observers:
                self._emit("timeout", key, "denied", exc.decision, wait_seconds=waited)
            raise
        waited = self.clock() - start
        self._counters.waited(waited, acquired=True)
        if self._observers:
            self._emit("acquire", key, "allowed", result[0], wait_seconds=waited)
        return result

    def _wait_flow(self, key: str, cost: float, timeout: float | None, start: float) -> Flow:
        clock = self.clock
        deadline = INF if timeout is None else start + timeout
        lease_id = None
        if self.max_concurrent is not None:
            lease_id = uuid.uuid4().hex
            pause = 0.005
            while wait := (yield LEASE, lease_id):
                left = deadline - clock()
                if left <= 0:
                    raise RateLimitTimeout(
                        self._busy(wait),
                        f"no concurrency slot for {key!r} within {timeout}s "
                        f"({self.max_concurrent} in use)",
                    )
                yield SLEEP, min(wait, pause, left)
                pause = min(pause * 2, 0.25)
            self._counters.slots(+1)
        try:
            while True:
                decision: Decision = yield HIT, cost
                if decision.allowed:
                    if decision.delay > 0:
                        yield SLEEP, decision.delay
                    return decision, lease_id
                if decision.retry_after == INF:
                    raise RateLimitExceeded(decision)
                if clock() + decision.retry_after > deadline:
                    raise RateLimitTimeout(
                        decision,
                        f"rate limit {decision.policy} for {key!r}: no slot within {timeout}s "
                        f"(next in {decision.retry_after:.3f}s)",
                    )
                yield SLEEP, decision.retry_after
        except BaseException:
            if lease_id is not None:
                self._released(key)
                yield RELEASE, lease_id
            raise

    def _released(self, key: str) -> None:
        """A concurrency slot of ``key`` is given back."""
        self._counters.slots(-1)
        if self._observers:
            self._emit("release", key, "allowed", None)


class PermitBase(Decision):
    """A decision that may hold a concurrency slot (the lease ``lease_id`` of ``key``)."""

    __slots__ = ("_key", "_lease_id", "_limiter")

    def __init__(self, decision: Decision, limiter: Any, key: str, lease_id: str | None) -> None:
        super().__init__(
            decision.allowed,
            decision.limit,
            decision.remaining,
            decision.reset_after,
            decision.retry_after,
            decision.delay,
            decision.policy,
            decision.fallback,
            decision.details,
        )
        self._limiter, self._key, self._lease_id = limiter, key, lease_id

    def _take_lease(self) -> str | None:
        """The lease to give back, once (release is idempotent)."""
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is not None:
            self._limiter._released(self._key)
        return lease_id


P = TypeVar("P")  # a permit, or a reservation


class AsyncAcquire(Generic[P]):
    """``await limiter.acquire(k)`` or ``async with limiter.acquire(k) as permit:`` (and the same
    for ``reserve``)."""

    __slots__ = ("_coro", "_permit")

    def __init__(self, coro: Coroutine[Any, Any, P]) -> None:
        self._coro = coro
        self._permit: P | None = None

    def __await__(self) -> Generator[Any, None, P]:
        return self._coro.__await__()

    async def __aenter__(self) -> P:
        self._permit = await self._coro
        return self._permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._permit is not None:
            await self._permit.__aexit__(exc_type, exc, tb)  # type: ignore[attr-defined]


def _shadowed(decision: Decision) -> Decision:
    """What shadow mode answers for a would-be denial: allowed, with the budget as it is."""
    return Decision(
        True,
        decision.limit,
        decision.remaining,
        decision.reset_after,
        0.0,
        0.0,
        decision.policy,
        False,
        decision.details,
    )


def _error_word(error: BaseException) -> str:
    """The short name of a store failure for events: the cause's class, e.g. 'TimeoutError'."""
    cause = error.__cause__ or error
    return type(cause).__name__


def store_kind(store: object) -> str:
    """A store's kind for metrics: its ``kind`` attribute, else from its class name
    (``AsyncRedisStore`` -> ``redis``)."""
    kind = getattr(store, "kind", None)
    if isinstance(kind, str):
        return kind
    name = type(store).__name__.lower().removeprefix("async").removesuffix("store")
    return name or "custom"
