"""FastLimit's limiter on ratekeeper: per-call rates, tenant tiers namespaced in the key.

.. code-block:: python

    from ratekeeper.compat.fastlimit import RateLimiter

    limiter = RateLimiter("redis://localhost:6379/0", tiers={"free": "10/minute",
                                                             "premium": "1000/minute"})
    await limiter.connect()                                       # ping the store at startup
    await limiter.check("user:123", rate="50/second")             # raises RateLimitExceeded
    await limiter.check("user:123", tenant_type="premium")        # the tier's rate

    @app.get("/search")
    @limiter.limit("100/minute", key=lambda request: request.headers["x-user"],
                   tenant_type=lambda request: request.headers.get("x-plan", "free"))
    async def search(): ...

One limiter is kept per distinct (rate, algorithm) (the registry's cache, so a per-call rate
costs a dict lookup), all on one store. A key is namespaced by its tenant type
(``default`` when none is given), so ``check("k", tenant_type="free")`` and
``check("k", tenant_type="premium")`` never share a counter, and two different rates on one key
never share a state either. The decorator is the FastAPI integration's
(:meth:`ratekeeper.integrations.fastapi.Limiter.limit`) on the same engine and keys, so
``limit(key=f)`` and ``check(f(request))`` for the same tenant draw from one budget; its
default key is the client address (``ip:203.0.113.7``, honouring ``trusted_proxies``).

Differences from FastLimit: a denial raises ratekeeper's `RateLimitExceeded`
(``exc.decision.retry_after``, ``exc.decision.limit``, ``exc.headers``); in a route it is a 429
with the rate-limit headers, no middleware needed. A store that cannot answer follows
``on_store_error`` (default ``"raise"``: `StoreUnavailable`, as FastLimit's ``BackendError``).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import (
    CostSpec,
    Key,
    KeySpec,
    LimitValue,
    RequestView,
    ViewFunction,
    storage_key,
)
from ratekeeper.integrations.rules import LimitRule
from ratekeeper.limiter import AsyncRateLimiter, OnStoreError
from ratekeeper.limits import Limit, to_limits
from ratekeeper.registry import Registry, StoreSpec

if TYPE_CHECKING:
    from ratekeeper.integrations.fastapi import Limiter

__all__ = ["DEFAULT_TENANT", "SCOPE", "RateLimiter"]

F = TypeVar("F", bound=Callable[..., Any])
Rate = LimitValue | Callable[[Any], Any]  # a rate, or a function of the request returning one

SCOPE = "fastlimit"  # the budget name every check and decorator of a limiter shares
DEFAULT_TENANT = "default"  # FastLimit's tenant type when none is given
RATES_PARSED = 1024  # distinct rate strings kept parsed


@functools.lru_cache(maxsize=RATES_PARSED)
def _parse(rate: str) -> tuple[Limit, ...]:
    return to_limits(rate)


def _as_limits(rate: LimitValue) -> tuple[Limit, ...]:
    """A rate as limits (a rate string parsed once); `ConfigError` for anything else."""
    if isinstance(rate, str):
        return _parse(rate)
    return to_limits(rate if isinstance(rate, Limit) else tuple(rate))


class RateLimiter:
    """FastLimit's ``RateLimiter``: ``check``, ``limit``, ``get_usage``, ``reset``,
    ``connect``/``close``.

    ``redis_url``: the store (any ratekeeper store URL or store object; default the memory
    store); ``key_prefix`` separates applications sharing one store; ``default_algorithm``
    (FastLimit's default, ``fixed_window``); ``tiers``: a rate per tenant type, used when a call
    gives no ``rate``; ``on_store_error``: ``"raise"`` (default), ``"allow"`` or ``"deny"``;
    ``clock``, ``registry`` and the other keywords are :class:`Engine` options
    (``trusted_proxies``, ``headers``, ``on_denied``...).
    """

    def __init__(
        self,
        redis_url: StoreSpec = None,
        *,
        key_prefix: str = "ratelimit",
        default_algorithm: str = "fixed_window",
        tiers: Mapping[str, LimitValue] | None = None,
        on_store_error: OnStoreError = "raise",
        clock: Callable[[], float] | None = None,
        registry: Registry | None = None,
        **options: Any,
    ) -> None:
        self.engine = Engine(
            store=redis_url,
            key_prefix=key_prefix,
            algorithm=default_algorithm,
            on_store_error=on_store_error,
            clock=clock,
            registry=registry,
            **options,
        )
        self.engine.store.async_()  # a store without an asyncio face fails here, not at a check
        self.tiers = {tier: _as_limits(rate) for tier, rate in (tiers or {}).items()}
        self._rules: dict[str | None, LimitRule] = {}  # one per algorithm
        self._used: dict[tuple[LimitRule, tuple[Limit, ...]], None] = {}  # for reset(key)
        self._web: Limiter | None = None

    # -- the library calls --

    async def check(
        self,
        key: str,
        rate: LimitValue | None = None,
        algorithm: str | None = None,
        tenant_type: str | None = None,
        cost: float = 1,
    ) -> bool:
        """Consume ``cost`` from ``key``'s budget under ``rate`` (default: the tenant type's
        tier); True when allowed, `RateLimitExceeded` when not."""
        limiter, skey = self._limiter(key, rate, algorithm, tenant_type)
        await limiter.enforce(skey, cost)
        return True

    async def get_usage(
        self,
        key: str,
        rate: LimitValue | None = None,
        tenant_type: str | None = None,
        algorithm: str | None = None,
    ) -> dict[str, Any]:
        """FastLimit's usage dict, consuming nothing: ``limit``, ``remaining``, ``current``
        (used), ``ttl`` (whole seconds until fully replenished) and ``window_seconds``."""
        limiter, skey = self._limiter(key, rate, algorithm, tenant_type)
        decision = await limiter.peek(skey, 0)
        return {
            "current": decision.limit - decision.remaining,
            "limit": decision.limit,
            "remaining": decision.remaining,
            "ttl": math.ceil(decision.reset_after),
            "window_seconds": decision.policy.per,
        }

    async def reset(
        self,
        key: str,
        tenant_type: str | None = None,
        rate: LimitValue | None = None,
        algorithm: str | None = None,
    ) -> None:
        """Forget ``key``'s usage under ``rate``; with ``rate=None``, under every rate this
        limiter has used (its checks', its decorators' fixed rates) and the tenant's tier."""
        if rate is not None:
            limiter, skey = self._limiter(key, rate, algorithm, tenant_type)
            await limiter.reset(skey)
            return
        used = dict(self._used)
        if (tenant_type or DEFAULT_TENANT) in self.tiers:
            used[self._rule(algorithm), self._tier(tenant_type)] = None
        skey = self._storage_key(key, tenant_type)
        for rule, limits in used:
            await self._async(rule, limits).reset(skey)

    async def connect(self) -> None:
        """Check now that the store answers (FastLimit connects here): `StoreUnavailable`
        otherwise, at startup rather than at the first request."""
        await self.engine.store.async_().ping()

    async def health_check(self) -> bool:
        """True when the store answers now."""
        try:
            await self.connect()
        except StoreUnavailable:
            return False
        return True

    async def close(self) -> None:
        """Close the store if this limiter built it from a URL."""
        await self.engine.aclose()

    async def __aenter__(self) -> RateLimiter:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the FastAPI decorator --

    def limit(
        self,
        rate: Rate | None = None,
        *,
        key: KeySpec | None = None,
        tenant_type: Callable[[Any], Any] | None = None,
        cost: CostSpec | None = None,
        algorithm: str | None = None,
    ) -> Callable[[F], F]:
        """Limit a FastAPI route (decorate below ``@app.get``): ``rate`` is a rate or a
        function of the request returning one (default: the tenant's tier); ``key``,
        ``tenant_type`` and ``cost`` are functions of the request (sync or async; ``cost`` may
        be a number). Keys and budgets are :meth:`check`'s."""
        if rate is None and not self.tiers:
            raise ConfigError("limit() needs a rate, or tiers= on the limiter")
        if tenant_type is not None and not callable(tenant_type):
            raise ConfigError(f"tenant_type must be a function of the request, got {tenant_type!r}")
        limit: Rate = rate if rate is not None else self._tier_of(tenant_type)
        if not callable(limit):
            self._remember(self._rule(algorithm), self._limits(limit, None))
        return self._fastapi().limit(
            limit,
            key=self._request_key(key, tenant_type),
            cost=cost,
            scope=SCOPE,
            algorithm=algorithm,
        )

    # -- shared by both --

    def _storage_key(self, key: str, tenant_type: str | None) -> str:
        tenant = Key("tenant", tenant_type or DEFAULT_TENANT, str(key))
        return storage_key(SCOPE, tenant, self.engine.key_prefix)

    def _limits(self, rate: LimitValue | None, tenant_type: str | None) -> tuple[Limit, ...]:
        if rate is None:
            return self._tier(tenant_type)
        return _as_limits(rate)

    def _tier(self, tenant_type: str | None) -> tuple[Limit, ...]:
        tier = tenant_type or DEFAULT_TENANT
        found = self.tiers.get(tier)
        if found is None:
            raise ConfigError(
                f"no rate given and no tier {tier!r}: pass rate=, or define it in tiers= "
                f"(known: {sorted(self.tiers)})"
            )
        return found

    def _rule(self, algorithm: str | None) -> LimitRule:
        rule = self._rules.get(algorithm)
        if rule is None:
            rule = LimitRule(_per_call, scope=SCOPE, algorithm=algorithm)
            self._rules[algorithm] = rule
        return rule

    def _async(self, rule: LimitRule, limits: tuple[Limit, ...]) -> AsyncRateLimiter:
        return cast(AsyncRateLimiter, self.engine.limiter(rule, limits, True))

    def _limiter(
        self,
        key: str,
        rate: LimitValue | None,
        algorithm: str | None,
        tenant_type: str | None,
    ) -> tuple[AsyncRateLimiter, str]:
        rule, limits = self._rule(algorithm), self._limits(rate, tenant_type)
        self._remember(rule, limits)
        return self._async(rule, limits), self._storage_key(key, tenant_type)

    def _remember(self, rule: LimitRule, limits: tuple[Limit, ...]) -> None:
        """Note a (rule, limits) in use, for :meth:`reset` without a rate (bounded)."""
        if (rule, limits) not in self._used and len(self._used) < self.engine.max_limiters:
            self._used[rule, limits] = None

    def _tier_of(self, tenant_type: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
        """The dynamic limit of a route without a rate: its tenant's tier."""

        async def limit(request: Any) -> tuple[Limit, ...]:
            tenant = await _value(tenant_type, request) if tenant_type is not None else None
            return self._tier(None if tenant is None else str(tenant))

        return limit

    def _request_key(
        self, key: KeySpec | None, tenant_type: Callable[[Any], Any] | None
    ) -> ViewFunction:
        """The decorator's key: ``key(request)`` (default: the client address) in the request's
        tenant namespace, as :meth:`check` builds it."""
        client = self.engine.client_key

        async def of(view: RequestView) -> Key:
            value = await _value(key, view.native) if key is not None else client(view)
            tenant = await _value(tenant_type, view.native) if tenant_type is not None else None
            return Key("tenant", str(tenant or DEFAULT_TENANT), str(value))

        return ViewFunction("fastlimit_key", of)

    def _fastapi(self) -> Limiter:
        if self._web is None:
            from ratekeeper.integrations.fastapi import Limiter

            self._web = Limiter(engine=self.engine)
        return self._web


def _per_call(request: Any) -> None:
    """The limit of :meth:`RateLimiter.check`'s rules: none of their own (each call gives its
    rate); the rules only name the budget and the algorithm."""


async def _value(func: Callable[[Any], Any], request: Any) -> Any:
    """``func(request)``, awaited when it returns an awaitable."""
    result = func(request)
    return await result if inspect.isawaitable(result) else result
