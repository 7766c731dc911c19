"""`RateLimiter` and `AsyncRateLimiter`.

Everything that is not waiting or I/O lives once in `_LimiterCore`: argument checks, the store
failure policy, and `acquire`'s waiting logic, written as a generator of steps (take a lease, hit,
sleep, release) that two small drivers run, one blocking and one with ``await``.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, TypeAlias

from ratekeeper._local_cache import DEFAULT_SIZE, OverLimitCache
from ratekeeper.algorithms import INF, Algorithm
from ratekeeper.clock import Clock, async_sleeper, sleeper, system_clock
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, RateLimitExceeded, RateLimitTimeout, StoreUnavailable
from ratekeeper.limits import Limit, to_limits
from ratekeeper.stores import AsyncStore, Rule, Store, async_store_from_url, store_from_url
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore

__all__ = ["AsyncPermit", "AsyncRateLimiter", "Permit", "RateLimiter"]

log = logging.getLogger("ratekeeper")

Limits: TypeAlias = str | Limit | Sequence[Limit]
OnStoreError = Literal["raise", "allow", "deny"]
_FAST_COSTS = frozenset({int, float})
_LOG_EVERY = 60.0  # seconds between two warnings about the same unreachable store
# A lease shorter than a millisecond expires before its holder starts (stores keep milliseconds);
# one longer than ten years overflows what Redis and PostgreSQL can hold as an expiry.
LEASE_TTL_MIN = 0.001
LEASE_TTL_MAX = 10 * 366 * 86400.0

# The steps of the acquire flow.
_LEASE, _HIT, _SLEEP, _RELEASE = "lease", "hit", "sleep", "release"
Step: TypeAlias = tuple[str, Any]
Flow: TypeAlias = Generator[Step, Any, tuple[Decision, str | None]]


class _LimiterCore:
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
    ) -> None:
        self.rule = Rule(algorithm, to_limits(limits))  # type: ignore[arg-type]
        self.limits: tuple[Limit, ...] = self.rule.limits
        self.algorithm = self.rule.algorithm.name
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a callable returning seconds, got {clock!r}")
        self.clock: Clock = clock or system_clock
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
        self._owns_store = store is None or isinstance(store, str)
        self._last_warning = -INF
        self._open(store)
        supported = getattr(self.store, "algorithms", None)  # stores with server-side ports
        if supported is not None and self.rule.algorithm.name not in supported:
            raise ConfigError(
                f"{type(self.store).__name__} cannot run algorithm {self.algorithm!r}; "
                f"it runs {', '.join(sorted(supported))}"
            )

    def _open(self, store: Any) -> None:
        """Set ``self.store`` (from a URL, an object, or a new memory store) and ``self._sleep``."""
        raise NotImplementedError

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

    def _fallback(self, exc: StoreUnavailable) -> Decision:
        """The decision given when the store is unreachable, by ``on_store_error``."""
        if self.on_store_error == "raise":
            raise exc
        now = time.monotonic()
        if now - self._last_warning >= _LOG_EVERY:
            self._last_warning = now
            log.warning(
                "rate limit store unavailable (%s); %s requests until it returns",
                exc,
                "allowing" if self.on_store_error == "allow" else "denying",
            )
        limit = self.limits[0]
        if self.on_store_error == "allow":
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
        clock = self.clock
        deadline = INF if timeout is None else clock() + timeout
        lease_id = None
        if self.max_concurrent is not None:
            lease_id = uuid.uuid4().hex
            pause = 0.005
            while wait := (yield _LEASE, lease_id):
                left = deadline - clock()
                if left <= 0:
                    raise RateLimitTimeout(
                        self._busy(wait),
                        f"no concurrency slot for {key!r} within {timeout}s "
                        f"({self.max_concurrent} in use)",
                    )
                yield _SLEEP, min(wait, pause, left)
                pause = min(pause * 2, 0.25)
        try:
            while True:
                decision: Decision = yield _HIT, cost
                if decision.allowed:
                    if decision.delay > 0:
                        yield _SLEEP, decision.delay
                    return decision, lease_id
                if decision.retry_after == INF:
                    raise RateLimitExceeded(decision)
                if clock() + decision.retry_after > deadline:
                    raise RateLimitTimeout(
                        decision,
                        f"rate limit {decision.policy} for {key!r}: no slot within {timeout}s "
                        f"(next in {decision.retry_after:.3f}s)",
                    )
                yield _SLEEP, decision.retry_after
        except BaseException:
            if lease_id is not None:
                yield _RELEASE, lease_id
            raise


class RateLimiter(_LimiterCore):
    """Limit how often a key may do something. Memory store unless ``store=`` says otherwise.

    ``RateLimiter("100/minute").hit("user:42")`` returns a :class:`Decision`.
    """

    store: Store
    _sleep: Callable[[float], None]

    def _open(self, store: Any) -> None:
        if store is None:
            store = MemoryStore()
        elif isinstance(store, str):
            store = store_from_url(store)
        elif not isinstance(store, Store) or inspect.iscoroutinefunction(store.hit):
            raise ConfigError(f"store must be a URL or a synchronous Store, got {store!r}")
        if isinstance(store, MemoryStore):
            store.follow(self.clock)
        self.store = store
        self._sleep = sleeper(self.clock)

    def hit(self, key: str, cost: float = 1) -> Decision:
        """Consume ``cost`` units for ``key`` if every limit allows it. Never raises on denial."""
        if type(key) is not str or type(cost) not in _FAST_COSTS or not 0 <= cost < INF:
            key, cost = self._checked(key, cost)
        if self._cache is not None:
            return self._cached(self.store.hit, key, cost)
        try:
            return self.store.hit(key, self.rule, cost, self.clock())
        except StoreUnavailable as exc:
            return self._fallback(exc)

    def peek(self, key: str, cost: float = 1) -> Decision:
        """What :meth:`hit` would answer now, consuming nothing."""
        key, cost = self._checked(key, cost)
        if self._cache is not None:
            return self._cached(self.store.peek, key, cost)
        try:
            return self.store.peek(key, self.rule, cost, self.clock())
        except StoreUnavailable as exc:
            return self._fallback(exc)

    def _cached(self, call: Callable[..., Decision], key: str, cost: float) -> Decision:
        """``hit`` or ``peek`` with the over-limit cache: a known denial is answered locally."""
        assert self._cache is not None
        now = self.clock()
        local = self._cache.check(key, cost, now)
        if local is not None:
            return local
        try:
            decision = call(key, self.rule, cost, now)
        except StoreUnavailable as exc:
            return self._fallback(exc)
        if not decision.allowed:
            self._cache.record(key, cost, now, decision)
        return decision

    def enforce(self, key: str, cost: float = 1) -> Decision:
        """Like :meth:`hit`, but raise :class:`RateLimitExceeded` on denial."""
        decision = self.hit(key, cost)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    def acquire(self, key: str, cost: float = 1, timeout: float | None = None) -> Permit:
        """Wait until ``key`` may proceed (or raise :class:`RateLimitTimeout`).

        Returns the decision as a :class:`Permit`, also a context manager: with
        ``max_concurrent`` the concurrency slot is held until the ``with`` block exits (or until
        :meth:`Permit.release`, or ``lease_ttl`` if the holder dies).
        """
        key, cost = self._checked(key, cost)
        flow = self._acquire_flow(key, cost, timeout)
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                step, arg = flow.throw(error) if error else flow.send(result)
            except StopIteration as stop:
                decision, lease_id = stop.value
                return Permit(decision, self, key, lease_id)
            error = None
            try:
                result = self._run_step(key, step, arg)
            except BaseException as exc:  # the flow releases its lease, then re-raises
                error = exc

    def _run_step(self, key: str, step: str, arg: Any) -> Any:
        if step == _HIT:
            return self.hit(key, arg)
        if step == _SLEEP:
            return self._sleep(arg)
        if step == _LEASE:
            assert self.max_concurrent is not None
            return self.store.acquire_lease(
                key, arg, self.max_concurrent, self.lease_ttl, self.clock()
            )
        return self.store.release_lease(key, arg, self.clock())

    def reset(self, key: str) -> None:
        """Forget everything about ``key`` (its budget becomes full, its leases are dropped)."""
        key = self._checked(key, 0)[0]
        if self._cache is not None:
            self._cache.discard(key)
        self.store.reset(key, self.rule)

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        self.store.ping()

    def close(self) -> None:
        """Close the store if this limiter created it from a URL (or by default)."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRateLimiter(_LimiterCore):
    """The asyncio twin of :class:`RateLimiter`: same arguments, every method a coroutine."""

    store: AsyncStore
    _sleep: Callable[[float], Awaitable[None]]

    def _open(self, store: Any) -> None:
        if store is None:
            store = AsyncMemoryStore()
        elif isinstance(store, str):
            store = async_store_from_url(store)
        elif isinstance(store, MemoryStore):
            store = AsyncMemoryStore(store)
        elif not isinstance(store, AsyncStore) or not inspect.iscoroutinefunction(store.hit):
            raise ConfigError(f"store must be a URL or an asyncio store, got {store!r}")
        if isinstance(store, AsyncMemoryStore):
            store.follow(self.clock)
        self.store = store
        self._sleep = async_sleeper(self.clock)

    async def hit(self, key: str, cost: float = 1) -> Decision:
        """Consume ``cost`` units for ``key`` if every limit allows it. Never raises on denial."""
        if type(key) is not str or type(cost) not in _FAST_COSTS or not 0 <= cost < INF:
            key, cost = self._checked(key, cost)
        if self._cache is not None:
            return await self._cached(self.store.hit, key, cost)
        try:
            return await self.store.hit(key, self.rule, cost, self.clock())
        except StoreUnavailable as exc:
            return self._fallback(exc)

    async def peek(self, key: str, cost: float = 1) -> Decision:
        """What :meth:`hit` would answer now, consuming nothing."""
        key, cost = self._checked(key, cost)
        if self._cache is not None:
            return await self._cached(self.store.peek, key, cost)
        try:
            return await self.store.peek(key, self.rule, cost, self.clock())
        except StoreUnavailable as exc:
            return self._fallback(exc)

    async def _cached(
        self, call: Callable[..., Awaitable[Decision]], key: str, cost: float
    ) -> Decision:
        """``hit`` or ``peek`` with the over-limit cache: a known denial is answered locally."""
        assert self._cache is not None
        now = self.clock()
        local = self._cache.check(key, cost, now)
        if local is not None:
            return local
        try:
            decision = await call(key, self.rule, cost, now)
        except StoreUnavailable as exc:
            return self._fallback(exc)
        if not decision.allowed:
            self._cache.record(key, cost, now, decision)
        return decision

    async def enforce(self, key: str, cost: float = 1) -> Decision:
        """Like :meth:`hit`, but raise :class:`RateLimitExceeded` on denial."""
        decision = await self.hit(key, cost)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    def acquire(self, key: str, cost: float = 1, timeout: float | None = None) -> _AsyncAcquire:
        """Wait until ``key`` may proceed; ``await`` it, or use it as ``async with``.

        Returns an :class:`AsyncPermit` (the decision); with ``max_concurrent`` the slot is held
        until the ``async with`` block exits (or :meth:`AsyncPermit.release`, or ``lease_ttl``).
        """
        key, cost = self._checked(key, cost)
        return _AsyncAcquire(self._acquire(key, cost, timeout))

    async def _acquire(self, key: str, cost: float, timeout: float | None) -> AsyncPermit:
        flow = self._acquire_flow(key, cost, timeout)
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                step, arg = flow.throw(error) if error else flow.send(result)
            except StopIteration as stop:
                decision, lease_id = stop.value
                return AsyncPermit(decision, self, key, lease_id)
            error = None
            try:
                result = await self._run_step(key, step, arg)
            except BaseException as exc:  # the flow releases its lease, then re-raises
                error = exc

    async def _run_step(self, key: str, step: str, arg: Any) -> Any:
        if step == _HIT:
            return await self.hit(key, arg)
        if step == _SLEEP:
            return await self._sleep(arg)
        if step == _LEASE:
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
        await self.store.reset(key, self.rule)

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        await self.store.ping()

    async def close(self) -> None:
        """Close the store if this limiter created it from a URL (or by default)."""
        if self._owns_store:
            await self.store.close()

    async def __aenter__(self) -> AsyncRateLimiter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Permit(Decision):
    """The decision `RateLimiter.acquire` returns; ``with`` it to release a concurrency slot."""

    __slots__ = ("_key", "_lease_id", "_limiter")

    def __init__(
        self, decision: Decision, limiter: RateLimiter, key: str, lease_id: str | None
    ) -> None:
        super().__init__(**{name: getattr(decision, name) for name in Decision.__slots__})
        self._limiter, self._key, self._lease_id = limiter, key, lease_id

    def release(self) -> None:
        """Give the concurrency slot back now (idempotent)."""
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is not None:
            self._limiter.store.release_lease(self._key, lease_id, self._limiter.clock())

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class AsyncPermit(Decision):
    """The decision `AsyncRateLimiter.acquire` gives; its slot is released by ``release()``."""

    __slots__ = ("_key", "_lease_id", "_limiter")

    def __init__(
        self, decision: Decision, limiter: AsyncRateLimiter, key: str, lease_id: str | None
    ) -> None:
        super().__init__(**{name: getattr(decision, name) for name in Decision.__slots__})
        self._limiter, self._key, self._lease_id = limiter, key, lease_id

    async def release(self) -> None:
        """Give the concurrency slot back now (idempotent)."""
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is not None:
            await self._limiter.store.release_lease(self._key, lease_id, self._limiter.clock())


class _AsyncAcquire(Awaitable[AsyncPermit]):
    """``await limiter.acquire(k)`` or ``async with limiter.acquire(k) as permit:``."""

    __slots__ = ("_coro", "_permit")

    def __init__(self, coro: Coroutine[Any, Any, AsyncPermit]) -> None:
        self._coro = coro
        self._permit: AsyncPermit | None = None

    def __await__(self) -> Generator[Any, None, AsyncPermit]:
        permit: AsyncPermit = yield from self._coro.__await__()
        return permit

    async def __aenter__(self) -> AsyncPermit:
        self._permit = await self._coro
        return self._permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._permit is not None:
            await self._permit.release()
