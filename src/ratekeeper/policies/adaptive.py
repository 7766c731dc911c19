"""Adaptive limits: ``AdaptiveLimiter(min=10, max=100, per=1)`` admits, per key, at most a limit
``L`` per window, where ``L`` moves between ``min`` and ``max`` by AIMD from the outcomes the
application reports, and every instance sharing the store sees the same ``L``.

``record(key, ok=False)`` (or ``latency=`` above the ``latency`` target) multiplies ``L`` by
``decrease`` (at most once per ``cooldown`` seconds, default one window: a burst of failures is one
congestion signal, as TCP halves once per round trip); ``record(key, ok=True)`` adds ``increase``.
With no reports ``L`` climbs back from ``min`` to ``max`` over ``recover`` seconds (default ten
years: in practice only by reports). A new or forgotten key starts at ``max``.

How it is kept in the store, with the operations every limiter uses (``apply_checks``):

- ``L`` is a token bucket (the gauge) of ``(max - min) * SCALE`` units refilling over
  ``recover`` seconds: ``L = min + remaining / SCALE``. A decrease is a conditional hit of
  ``(L - L * decrease) * SCALE`` units, in one atomic ``apply_checks`` with a hit on a token
  bucket of one unit per ``cooldown`` (the cooldown); an increase is a refund (never past full,
  that is ``max``). A decrease computed from a value another instance changed meanwhile is refused
  by its conditional hit and computed again.
- The requests of a key go to one window of ``max`` per ``per`` seconds, checked with a priority
  share ``L / max`` (`ratekeeper.policies.priorities`): a hit passes only if, after it, at most
  ``L`` units of the window are in use. So a change of ``L`` keeps the window's usage; a
  decrease below it denies until the usage falls under the new limit. Only the window algorithms
  (``sliding_window``, the default, ``fixed_window``, ``sliding_log``) are accepted: in a bucket a
  share caps the burst, not the rate.

A hit reads ``L`` and then decides: two round trips.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ratekeeper._drive import drive, drive_async
from ratekeeper.algorithms import Rule
from ratekeeper.algorithms.checks import HIT, REFUND, Check
from ratekeeper.decision import Decision
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

__all__ = ["SCALE", "AdaptiveCore", "AdaptiveLimiter", "AsyncAdaptiveLimiter"]

log = logging.getLogger("ratekeeper")

SCALE = 1000
"""Units of the gauge per unit of limit: ``L`` is kept to a thousandth."""
WINDOWS = ("sliding_window", "fixed_window", "sliding_log")
# A decrease refused because another instance changed L meanwhile is computed again this often.
_ATTEMPTS = 3


class AdaptiveCore:
    """What `AdaptiveLimiter` and `AsyncAdaptiveLimiter` share (see the module docstring)."""

    store: Any

    _kind: type[Any]  # the limiter class of the face: RateLimiter or AsyncRateLimiter

    def __init__(
        self,
        min: int,
        max: int,
        per: float = 1.0,
        *,
        algorithm: str = "sliding_window",
        store: Any = None,
        clock: Any = None,
        increase: float = 1.0,
        decrease: float = 0.5,
        latency: float | None = None,
        cooldown: float | None = None,
        recover: float = MAX_PERIOD,
        on_store_error: Any = "raise",
        name: str | None = None,
    ) -> None:
        kind, minimum, maximum = self._kind, min, max
        low = int(number(minimum, "min", 1, MAX_AMOUNT, integer=True))
        high = int(number(maximum, "max", 1, MAX_AMOUNT, integer=True))
        if low >= high:
            raise ConfigError(f"min must be below max, got min={low}, max={high}")
        if (high - low) * SCALE > MAX_AMOUNT:
            raise ConfigError(f"max - min must be at most {MAX_AMOUNT // SCALE}")
        if algorithm not in WINDOWS:
            raise ConfigError(
                f"AdaptiveLimiter needs a window algorithm ({', '.join(WINDOWS)}), got "
                f"{algorithm!r}: in a bucket a share of the budget caps the burst, not the rate"
            )
        self.min, self.max = low, high
        self.limiter = kind(
            Limit(high, per=per),
            algorithm=algorithm,
            store=store,
            clock=clock,
            on_store_error=on_store_error,
            name=name,
        )
        self.store = self.limiter._checks_store()
        self.clock = self.limiter.clock
        self.per = self.limiter.limits[0].per
        self.rule = Rule(algorithm, self.limiter.limits, namespace="adaptive:")
        self.increase = number(increase, "increase", 0.0, float(high))
        self.decrease = number(decrease, "decrease", 0.0, 1.0)
        if not 0.0 < self.decrease < 1.0:
            raise ConfigError(f"decrease must be a factor in (0, 1), got {decrease!r}")
        self.latency = None if latency is None else number(latency, "latency", 0.0, MAX_PERIOD)
        self.cooldown = number(
            self.per if cooldown is None else cooldown, "cooldown", MIN_PERIOD, MAX_PERIOD
        )
        self.recover = number(recover, "recover", MIN_PERIOD, MAX_PERIOD)
        self.gauge = Rule(
            "token_bucket",
            (Limit((high - low) * SCALE, per=self.recover),),
            namespace="adaptive:limit:",
        )
        self.guard = Rule(
            "token_bucket", (Limit(1, per=self.cooldown),), namespace="adaptive:cooldown:"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min={self.min}, max={self.max}, per={self.per:g}, "
            f"algorithm={self.limiter.algorithm!r})"
        )

    def _read(self, key: str) -> Flow[float]:
        """The key's current limit ``L``."""
        applied = yield apply([Check(key, self.gauge, 0.0, HIT)], self.clock(), False)
        return self.min + float(applied.decisions[0].remaining) / SCALE

    def _limit(self, key: object) -> Flow[float]:
        return (yield from self._read(self.limiter._checked(key, 0)[0]))

    def _decide(self, key: object, cost: object, write: bool) -> Flow[Decision]:
        name, units = self.limiter._checked(key, cost)
        try:
            limit = yield from self._read(name)
            whole = self.limiter.limits[0]
            share = share_for(limit, whole, self.rule.algorithm)
            check = Check(name, self.rule, units, HIT, share)
            applied = yield apply([check], self.clock(), write)
        except StoreUnavailable as exc:
            return self.limiter._fallback(exc, counted=write)  # type: ignore[no-any-return]
        return with_limit(applied.decisions[0], math.floor(limit))

    def _record(self, key: object, ok: object, latency: object) -> Flow[float]:
        name = self.limiter._checked(key, 0)[0]
        if not isinstance(ok, bool):
            raise ValueError(f"ok must be True or False, got {ok!r}")
        if latency is not None:
            try:
                seconds = number(latency, "latency", 0.0, math.inf)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            ok = ok and (self.latency is None or seconds <= self.latency)
        try:
            if ok:
                if self.increase:
                    now = self.clock()
                    units = self.increase * SCALE
                    yield apply([Check(name, self.gauge, units, REFUND, at=now)], now)
                return (yield from self._read(name))
            for _ in range(_ATTEMPTS):
                limit = yield from self._read(name)
                target = max(float(self.min), limit * self.decrease)
                units = (limit - target) * SCALE
                if units <= 0:
                    return limit
                applied = yield apply(
                    [Check(name, self.guard, 1.0, HIT), Check(name, self.gauge, units, HIT)],
                    self.clock(),
                )
                cooling, lowered = applied.decisions
                if not cooling.allowed or lowered.allowed:
                    break
            return (yield from self._read(name))
        except StoreUnavailable as exc:
            self.limiter._settle_failed(exc)
            return float("nan")

    def _reset(self, key: object) -> Flow[None]:
        name = self.limiter._checked(key, 0)[0]
        for rule in (self.rule, self.gauge, self.guard):
            yield reset(name, rule)


class AdaptiveLimiter(SyncSteps, AdaptiveCore):
    """A limit per key that moves between ``min`` and ``max`` units per ``per`` seconds by AIMD
    from reported outcomes, shared through the store (see the module docstring)."""

    _kind = RateLimiter

    def hit(self, key: str, cost: float = 1) -> Decision:
        """Consume ``cost`` if it fits the key's current limit (``decision.limit``)."""
        return drive(self._decide(key, cost, True), self._run)

    def peek(self, key: str, cost: float = 1) -> Decision:
        """What :meth:`hit` would answer now, consuming nothing."""
        return drive(self._decide(key, cost, False), self._run)

    def enforce(self, key: str, cost: float = 1) -> Decision:
        """Like :meth:`hit`, but raise :class:`RateLimitExceeded` on denial."""
        decision = self.hit(key, cost)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    def limit(self, key: str) -> float:
        """The key's current limit, as every instance sees it."""
        return drive(self._limit(key), self._run)

    def record(self, key: str, ok: bool = True, latency: float | None = None) -> float:
        """Report one outcome for ``key`` (a failure, or a latency above the target, decreases
        the limit; a success increases it); returns the limit after it."""
        return drive(self._record(key, ok, latency), self._run)

    def reset(self, key: str) -> None:
        """Forget ``key``'s usage and limit (it starts again at ``max``)."""
        drive(self._reset(key), self._run)

    def close(self) -> None:
        """Close the store if this limiter created it from a URL (or by default)."""
        self.limiter.close()


class AsyncAdaptiveLimiter(AsyncSteps, AdaptiveCore):
    """The asyncio twin of `AdaptiveLimiter` (the same arguments; methods are coroutines)."""

    _kind = AsyncRateLimiter

    async def hit(self, key: str, cost: float = 1) -> Decision:
        """See `AdaptiveLimiter.hit`."""
        return await drive_async(self._decide(key, cost, True), self._run)

    async def peek(self, key: str, cost: float = 1) -> Decision:
        """See `AdaptiveLimiter.peek`."""
        return await drive_async(self._decide(key, cost, False), self._run)

    async def enforce(self, key: str, cost: float = 1) -> Decision:
        """See `AdaptiveLimiter.enforce`."""
        decision = await self.hit(key, cost)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    async def limit(self, key: str) -> float:
        """See `AdaptiveLimiter.limit`."""
        return await drive_async(self._limit(key), self._run)

    async def record(self, key: str, ok: bool = True, latency: float | None = None) -> float:
        """See `AdaptiveLimiter.record`."""
        return await drive_async(self._record(key, ok, latency), self._run)

    async def reset(self, key: str) -> None:
        """See `AdaptiveLimiter.reset`."""
        await drive_async(self._reset(key), self._run)

    async def close(self) -> None:
        """See `AdaptiveLimiter.close`."""
        await self.limiter.close()
