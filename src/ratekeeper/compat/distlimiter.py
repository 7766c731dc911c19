"""distlimiter's limiter on ratekeeper: ``await limiter.allow(key)``, ``get_stats(key)``,
``reset(key)``.

.. code-block:: python

    from ratekeeper.compat.distlimiter import RateLimiter, get_stats

    limiter = RateLimiter("10/minute", store="redis://localhost:6379/0", key_prefix="api")
    if await limiter.allow("user123"): ...
    await limiter.get_stats("user123")    # {"remaining": 9, "limit": 10, "reset_after": 6.0, ...}

    get_stats(ratekeeper.RateLimiter("10/minute"), "user123")   # the same for any sync limiter

distlimiter's algorithm objects become a rate and an algorithm name
(``TokenBucket(capacity=10, refill_rate=1)`` is ``Limit(10, per=10)`` with ``token_bucket``;
``FixedWindow(max_requests=100, window_seconds=60)`` is ``"100/minute"`` with
``fixed_window``), and its backends a store URL or object. A store that cannot answer follows
``on_store_error`` (default ``"raise"``: `StoreUnavailable`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from ratekeeper.decision import Decision
from ratekeeper.limiter import AsyncRateLimiter, Limits, OnStoreError
from ratekeeper.limiter import RateLimiter as CoreRateLimiter
from ratekeeper.limits import Limit, to_limits
from ratekeeper.registry import Registry, StoreSpec

__all__ = ["RateLimiter", "get_stats", "stats_of"]


class RateLimiter:
    """distlimiter's asyncio ``RateLimiter``: ``limits`` and ``algorithm`` (any of
    ratekeeper's), ``store`` (URL or store object; default memory), ``key_prefix`` (prepended
    to every key, as distlimiter does), ``on_store_error``, ``clock``, ``name``, and the
    ``registry`` that builds the store and the limiter (default: a private one).
    ``self.limiter`` is the underlying `AsyncRateLimiter`."""

    def __init__(
        self,
        limits: Limits,
        *,
        algorithm: str = "token_bucket",
        store: StoreSpec = None,
        key_prefix: str = "distlimiter",
        on_store_error: OnStoreError = "raise",
        clock: Callable[[], float] | None = None,
        name: str | None = None,
        registry: Registry | None = None,
    ) -> None:
        registry = registry if registry is not None else Registry(discover=False)
        options: dict[str, Any] = {"algorithm": algorithm, "on_store_error": on_store_error}
        if clock is not None:
            options["clock"] = clock
        if name is not None:
            options["name"] = name
        parsed = to_limits(limits if isinstance(limits, str | Limit) else tuple(limits))
        self.limiter = cast(
            AsyncRateLimiter,
            registry.limiter(registry.store(store), parsed, asynchronous=True, **options),
        )
        self.key_prefix = key_prefix

    def _key(self, key: str) -> str:
        return f"{self.key_prefix}:{key}" if self.key_prefix else key

    async def allow(self, key: str, cost: float = 1) -> bool:
        """Consume ``cost`` if ``key`` has room: True when allowed."""
        return (await self.limiter.hit(self._key(key), cost)).allowed

    async def get_stats(self, key: str) -> dict[str, Any]:
        """``key``'s usage now, consuming nothing (see :func:`stats_of`)."""
        return stats_of(key, await self.limiter.peek(self._key(key), 0), self.limiter)

    async def reset(self, key: str) -> None:
        """Forget ``key``'s usage."""
        await self.limiter.reset(self._key(key))

    async def close(self) -> None:
        """Close the limiter's store."""
        await self.limiter.close()


def get_stats(limiter: CoreRateLimiter, key: str) -> dict[str, Any]:
    """distlimiter's ``get_stats(key)`` for any ratekeeper `RateLimiter` (see :func:`stats_of`);
    ``await RateLimiter(...).get_stats(key)`` is the asyncio form."""
    return stats_of(key, limiter.peek(key, 0), limiter)


def stats_of(
    key: str, now: Decision, limiter: CoreRateLimiter | AsyncRateLimiter
) -> dict[str, Any]:
    """The stats of ``key`` from ``now`` (a zero-cost peek) and the limiter's counters:
    ``key``, ``algorithm``, ``limit`` and ``window_seconds`` (of the binding limit),
    ``remaining`` (units that could be used now), ``used``, ``reset_after`` (seconds until fully
    replenished), and the limiter's ``allowed`` and ``denied`` totals (every key)."""
    totals = limiter.metrics()
    return {
        "key": key,
        "algorithm": limiter.algorithm,
        "limit": now.limit,
        "window_seconds": now.policy.per,
        "remaining": now.remaining,
        "used": now.limit - now.remaining,
        "reset_after": now.reset_after,
        "allowed": totals.allowed,
        "denied": totals.denied,
    }
