"""The engine every framework adapter drives.

An adapter turns its framework's request into a :class:`RequestView` and asks an :class:`Engine`
to check a list of :class:`LimitRule`; the engine answers an :class:`Outcome` (the decision to
report, and whether the request may go on). The adapter only builds responses.

The check is written once, as a generator (:meth:`Engine._flow`) that yields whatever must be
awaited (an async key, cost or limit function; an async limiter's ``hit``); two small drivers run
it, :meth:`Engine.check` (blocking) and :meth:`Engine.check_async`. A dynamic limit that raises or
is not a rate skips its rule, logged.

Blocking code with an asyncio store (Flask or sync Django given an ``AsyncRedisStore``) runs each
store call on the engine's one long-lived event loop thread (:class:`LoopThread`), waiting at most
``bridge_timeout`` for it; past that the store counts as unavailable and ``on_store_error``
decides, so a blocking request is answered within that bound whatever the store does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any

from ratekeeper.algorithms import get_algorithm
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.integrations.keys import (
    CostSpec,
    IPNetwork,
    KeySpec,
    LimitSpec,
    RequestView,
    ViewFunction,
    _warn,
    client_ip,
    peer_key,
    storage_key,
)
from ratekeeper.integrations.loop import LoopThread
from ratekeeper.integrations.rules import (
    _FAILED,
    _GROUP_OF,
    HEADER_GROUPS,
    HeaderGroup,
    LimitRule,
    Outcome,
    _methods,
    _path_matchers,
    denial_body,
)
from ratekeeper.limiter import AsyncRateLimiter, OnStoreError, RateLimiter
from ratekeeper.limits import Limit, to_limits
from ratekeeper.stores import AsyncStore, Store, async_store_from_url, store_from_url
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore

# Seconds blocking code waits for an asyncio store's answer before it counts the store as
# unavailable: the stores' own 0.5 s deadline plus room, inside the 1.0 s decision bound.
BRIDGE_TIMEOUT = 0.75


class Engine:
    """Configuration and decisions shared by every framework adapter.

    ``limits``: app-wide default limit (string, `Limit`(s) or callable), applied to every
    non-exempt request under scope ``"default"``; ``rules``: more `LimitRule`\\ s; ``key``: the
    default key function (client address, honouring ``trusted_proxies``); ``cost``: default cost;
    ``store``: URL or store object (one store, shared by every limiter the engine builds);
    ``algorithm``, ``clock``; ``on_store_error``: ``"allow"`` (default: a dead store must not take
    the site down; logged), ``"deny"`` or ``"raise"``; ``exempt_paths`` (prefixes or compiled
    regexes) and ``exempt_methods`` (default OPTIONS, for CORS preflights); ``headers``: True,
    False, or the groups to send among ``"ratelimit"`` (IETF ``RateLimit``/``RateLimit-Policy``),
    ``"x-ratelimit"`` and ``"retry-after"``; ``on_denied``: ``(request, decision)`` returning the
    framework's response (or None for the default JSON 429); ``key_prefix`` (default none: the
    stores namespace their keys already) separates engines sharing one store; ``enabled=False``
    switches limiting off; ``bridge_timeout``: how long blocking code waits for an asyncio
    store (default 0.75 s) before ``on_store_error`` decides.

    Store keys are ``[key_prefix:]scope:kind:value`` (:func:`storage_key`), unambiguous: a custom
    key function's value is of kind ``custom`` and cannot reach a built-in key's budget.

    One limiter is built per distinct (algorithm, limits) and cached, so a dynamic limit costs a
    dict lookup per request, not a limiter.
    """

    def __init__(
        self,
        limits: LimitSpec | None = None,
        *,
        rules: Iterable[LimitRule] = (),
        key: KeySpec | None = None,
        cost: CostSpec = 1,
        store: str | Store | AsyncStore | None = None,
        algorithm: str = "token_bucket",
        clock: Callable[[], float] | None = None,
        on_store_error: OnStoreError = "allow",
        exempt_paths: Iterable[str | re.Pattern[str]] = (),
        exempt_methods: Iterable[str] = ("OPTIONS",),
        trusted_proxies: Iterable[str | IPNetwork] = (),
        proxy_header: str = "x-forwarded-for",
        headers: bool | Iterable[HeaderGroup] = True,
        on_denied: Callable[[Any, Decision], Any] | None = None,
        key_prefix: str = "",
        enabled: bool = True,
        max_limiters: int = 1024,
        bridge_timeout: float = BRIDGE_TIMEOUT,
    ) -> None:
        if on_store_error not in ("allow", "deny", "raise"):
            raise ConfigError(
                f"on_store_error must be 'allow', 'deny' or 'raise', got {on_store_error!r}"
            )
        self.client_key = client_ip(trusted_proxies, proxy_header=proxy_header)
        self.default_key: KeySpec = key or self.client_key
        if not callable(self.default_key):
            raise ConfigError(f"key must be a callable, got {key!r}")
        self.default_cost = cost
        self.algorithm = algorithm
        get_algorithm(algorithm)  # a bad algorithm name fails here, not on the first request
        self.clock = clock
        self.on_store_error: OnStoreError = on_store_error
        self.exempt_paths = _path_matchers(exempt_paths)
        self.exempt_methods = _methods(exempt_methods) or frozenset()
        if headers is True:
            self.header_groups = HEADER_GROUPS
        elif headers is False or headers is None:
            self.header_groups = frozenset()
        else:
            self.header_groups = frozenset(headers)
            unknown = self.header_groups - HEADER_GROUPS
            if unknown:
                raise ConfigError(f"unknown header groups {sorted(unknown)}; use {HEADER_GROUPS}")
        if on_denied is not None and not callable(on_denied):
            raise ConfigError(f"on_denied must be a callable, got {on_denied!r}")
        self.on_denied = on_denied
        if not isinstance(key_prefix, str):
            raise ConfigError(f"key_prefix must be a string, got {key_prefix!r}")
        self.key_prefix = key_prefix
        if (
            isinstance(bridge_timeout, bool)
            or not isinstance(bridge_timeout, int | float)
            or not 0 < bridge_timeout < math.inf
        ):
            raise ConfigError(f"bridge_timeout must be a positive number, got {bridge_timeout!r}")
        self.bridge_timeout = float(bridge_timeout)
        self._loop = LoopThread()  # started on first use only
        weakref.finalize(self, self._loop.stop)
        self.enabled = enabled
        self.max_limiters = max_limiters
        self.rules: list[LimitRule] = []
        if limits is not None:
            self.rules.append(self.rule(limits, scope="default"))
        self.rules.extend(rules)
        self._store_spec = store
        self._sync_store: Store | None = None
        self._async_store: AsyncStore | None = None
        self._setup_store(store)
        self._limiters: dict[tuple[Any, ...], RateLimiter | AsyncRateLimiter] = {}
        self._parsed: dict[str, tuple[Limit, ...] | None] = {}
        self._lock = threading.Lock()

    def _setup_store(self, store: str | Store | AsyncStore | None) -> None:
        if store is None:
            memory = MemoryStore()
            self._sync_store, self._async_store = memory, AsyncMemoryStore(memory)
        elif isinstance(store, str) and store.lower().startswith("memory:"):
            self._setup_store(MemoryStore.from_url(store))
        elif isinstance(store, str):
            self._check_url(store)  # the stores themselves are built on first use
        elif isinstance(store, MemoryStore):
            self._sync_store, self._async_store = store, AsyncMemoryStore(store)
        elif inspect.iscoroutinefunction(getattr(store, "hit", None)):
            self._async_store = store  # type: ignore[assignment]
        elif isinstance(store, Store):
            self._sync_store = store
        else:
            raise ConfigError(f"store must be a URL or a store object, got {store!r}")

    @staticmethod
    def _check_url(url: str) -> None:
        from ratekeeper.stores import _store_class

        _store_class(url, 1)  # unknown schemes and missing client libraries fail at setup

    def close(self) -> None:
        """Close the synchronous store if the engine built it from a URL, and stop the engine's
        event loop thread (if blocking code used one)."""
        if isinstance(self._store_spec, str) and self._sync_store is not None:
            self._sync_store.close()
        self._loop.stop()

    async def aclose(self) -> None:
        """Close the stores the engine built from a URL (call it on application shutdown)."""
        if isinstance(self._store_spec, str):
            if self._async_store is not None:
                await self._async_store.close()
            self.close()

    def sync_store(self) -> Store:
        if self._sync_store is None:
            if not isinstance(self._store_spec, str):
                raise ConfigError(
                    f"store {self._store_spec!r} is asynchronous; this integration needs a "
                    "synchronous store (or a URL)"
                )
            self._sync_store = store_from_url(self._store_spec)
        return self._sync_store

    def async_store(self) -> AsyncStore:
        if self._async_store is None:
            if not isinstance(self._store_spec, str):
                raise ConfigError(
                    f"store {self._store_spec!r} is synchronous; this integration needs an "
                    "asyncio store (or a URL)"
                )
            self._async_store = async_store_from_url(self._store_spec)
        return self._async_store

    def rule(
        self,
        limit: LimitSpec,
        *,
        scope: str,
        key: KeySpec | None = None,
        cost: CostSpec | None = None,
        methods: Iterable[str] | None = None,
        paths: Iterable[str | re.Pattern[str]] | None = None,
        algorithm: str | None = None,
    ) -> LimitRule:
        """A rule using this engine's defaults for what is not given."""
        return LimitRule(
            limit,
            scope=scope,
            key=key,
            cost=self.default_cost if cost is None else cost,
            methods=methods,
            paths=paths,
            algorithm=algorithm,
        )

    def is_exempt(self, view: RequestView) -> bool:
        if not self.enabled or view.method.upper() in self.exempt_methods:
            return True
        return any(match(view.path) for match in self.exempt_paths)

    def response_headers(self, decision: Decision | None) -> dict[str, str]:
        """The rate-limit headers to send for ``decision``. A store-outage fallback knows no
        budget: none, except ``Retry-After`` when it denies (``on_store_error="deny"``)."""
        if decision is None or not self.header_groups:
            return {}
        if decision.fallback:
            if decision.allowed or "retry-after" not in self.header_groups:
                return {}
            return {"Retry-After": str(max(1, math.ceil(decision.retry_after)))}
        groups = self.header_groups
        return {
            name: value
            for name, value in decision.headers().items()
            if _GROUP_OF.get(name, "ratelimit") in groups
        }

    def denial_body(self, decision: Decision) -> bytes:
        return json.dumps(denial_body(decision)).encode()

    # -- limiters --

    def _limits(self, value: Any) -> tuple[Limit, ...] | None:
        """A dynamic limit's value as limits (cached by string); None to skip the rule."""
        if value is None:
            return None
        if isinstance(value, str):
            cached = self._parsed.get(value, _FAILED)
            if cached is not _FAILED:
                return cached  # type: ignore[return-value]
        try:
            limits = to_limits(value)
        except (ConfigError, TypeError) as exc:
            _warn(
                "limit-value",
                "ratekeeper: dynamic limit %r is not a rate (%s); not limiting",
                value,
                exc,
            )
            limits = None
        if isinstance(value, str) and len(self._parsed) < self.max_limiters:
            self._parsed[value] = limits
        return limits

    def limiter(
        self, limits: tuple[Limit, ...], algorithm: str | None, asynchronous: bool
    ) -> RateLimiter | AsyncRateLimiter:
        """The cached limiter for these limits (one per distinct limits, not per request)."""
        algorithm = algorithm or self.algorithm
        cache_key = (asynchronous, algorithm, limits)
        found = self._limiters.get(cache_key)
        if found is not None:
            return found
        with self._lock:
            found = self._limiters.get(cache_key)
            if found is None:
                if len(self._limiters) >= self.max_limiters:
                    _warn("limiters", "ratekeeper: more than %d distinct limits", self.max_limiters)
                    self._limiters.pop(next(iter(self._limiters)))
                options: dict[str, Any] = {
                    "algorithm": algorithm,
                    "clock": self.clock,
                    "on_store_error": self.on_store_error,
                }
                if asynchronous:
                    found = AsyncRateLimiter(limits, store=self.async_store(), **options)
                else:
                    found = RateLimiter(limits, store=self.sync_store(), **options)
                self._limiters[cache_key] = found
        return found

    # -- the check, once, and its two drivers --

    def _call(
        self, func: Callable[[Any], Any], view: RequestView, what: str
    ) -> Generator[Any, Any, Any]:
        """Call a user or built-in function; yield its result if awaitable; _FAILED if it raised."""
        try:
            result = func(view) if isinstance(func, ViewFunction) else func(view.native)
            if inspect.isawaitable(result):
                result = yield result
        except Exception:
            _warn(what, "ratekeeper: the %s function %r raised", what, func, exc_info=True)
            return _FAILED
        return result

    def _flow(
        self, view: RequestView, rules: Sequence[LimitRule], asynchronous: bool
    ) -> Generator[Any, Any, Outcome]:
        outcome = Outcome()
        for rule in rules:
            if not rule.applies(view):
                continue
            limits = rule.static
            if limits is None:
                value = yield from self._call(rule.limit, view, "limit")  # type: ignore[arg-type]
                if value is _FAILED:
                    continue
                limits = self._limits(value)
                if limits is None:
                    continue
            key = storage_key(rule.scope, (yield from self._key(rule, view)), self.key_prefix)
            cost = rule.cost
            if callable(cost):
                cost = yield from self._call(cost, view, "cost")
                if cost is _FAILED or not _valid_cost(cost):
                    if cost is not _FAILED:
                        _warn("cost", "ratekeeper: cost %r is not a number >= 0; using 1", cost)
                    cost = 1
            limiter = self.limiter(limits, rule.algorithm, asynchronous)
            result: Any = limiter.hit(key, float(cost))
            if asynchronous:
                try:
                    decision: Decision = yield _StoreCall(result)
                except StoreUnavailable as exc:  # no answer in time (the bridge's deadline)
                    decision = self._outage(limits, exc)
            else:
                decision = result
            outcome.decisions[rule.scope] = decision
            if not decision.allowed:  # a denial (or a store outage with on_store_error="deny")
                outcome.allowed, outcome.decision, outcome.rule = False, decision, rule
                return outcome
            if not decision.fallback and (
                outcome.decision is None or decision.remaining < outcome.decision.remaining
            ):
                outcome.decision, outcome.rule = decision, rule
        return outcome

    def _key(self, rule: LimitRule, view: RequestView) -> Generator[Any, Any, str]:
        """The key function's value: a non-empty string as is, an int as its decimal string;
        anything else (None, "", an object that would make a new key per request) is logged and
        the request is keyed by client address."""
        func = rule.key or self.default_key
        value = yield from self._call(func, view, "key")
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is not _FAILED:
            _warn(
                "key-value",
                "ratekeeper: key function %r returned %r, not a non-empty str or an int; "
                "keying by client address",
                func,
                value if value is None or isinstance(value, str) else type(value),
            )
        if func is not self.client_key:  # the client address, honouring trusted proxies
            value = yield from self._call(self.client_key, view, "key")
            if isinstance(value, str) and value:
                return value
        return peer_key(view)

    def _outage(self, limits: tuple[Limit, ...], exc: StoreUnavailable) -> Decision:
        """The ``on_store_error`` decision when the store gave no answer in time."""
        if self.on_store_error == "raise":
            raise exc
        _warn(
            "store-timeout",
            "ratekeeper: rate limit store unavailable (%s); %s requests",
            exc,
            "allowing" if self.on_store_error == "allow" else "denying",
        )
        limit = limits[0]
        if self.on_store_error == "allow":
            return Decision(True, limit.amount, limit.amount, 0.0, 0.0, 0.0, limit, True)
        return Decision(False, limit.amount, 0, 1.0, 1.0, 0.0, limit, True)

    def check(self, view: RequestView, rules: Sequence[LimitRule] | None = None) -> Outcome:
        """Check ``view`` against ``rules`` (default: the engine's rules) from blocking code.
        Awaitables returned by key/cost/limit functions are run to completion on the engine's
        event loop thread; with only an asyncio store, so are the store calls, each within
        ``bridge_timeout``."""
        asynchronous = self._sync_store is None and self._async_store is not None
        flow = self._flow(view, self.rules if rules is None else rules, asynchronous)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.throw(error) if error else flow.send(value)
            except StopIteration as stop:
                result: Outcome = stop.value
                return result
            error = None
            try:
                if isinstance(step, _StoreCall):
                    value = self._loop.run(step.call, self.bridge_timeout)
                else:
                    value = self.run_sync(step)
            except TimeoutError as exc:
                error = StoreUnavailable(f"no answer from the store within {exc}")
            except Exception as exc:
                error = exc

    async def check_async(
        self, view: RequestView, rules: Sequence[LimitRule] | None = None
    ) -> Outcome:
        """Check ``view`` against ``rules`` (default: the engine's rules) with asyncio limiters
        (with only a synchronous store, the blocking check runs in a worker thread)."""
        if self._async_store is None and self._sync_store is not None:
            return await asyncio.to_thread(self.check, view, rules)
        flow = self._flow(view, self.rules if rules is None else rules, True)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.throw(error) if error else flow.send(value)
            except StopIteration as stop:
                result: Outcome = stop.value
                return result
            error = None
            try:
                value = await (step.call if isinstance(step, _StoreCall) else step)
            except Exception as exc:
                error = exc

    def run_sync(self, value: Any) -> Any:
        """Run an awaitable to completion on the engine's event loop thread, from blocking code
        (plain values pass through). Blocking checks run async key functions and asyncio store
        calls there; close an asyncio store object used from blocking code there too:
        ``engine.run_sync(store.close())``."""
        return self._loop.run(value) if inspect.isawaitable(value) else value

    # -- the denial hook --

    def call_on_denied(self, native: Any, decision: Decision) -> Any:
        """The ``on_denied`` hook's response (awaitables run to completion), or None."""
        if self.on_denied is None:
            return None
        try:
            return self.run_sync(self.on_denied(native, decision))
        except Exception:
            _warn("on_denied", "ratekeeper: on_denied hook raised; default 429", exc_info=True)
            return None

    async def call_on_denied_async(self, native: Any, decision: Decision) -> Any:
        if self.on_denied is None:
            return None
        try:
            result = self.on_denied(native, decision)
            return await result if inspect.isawaitable(result) else result
        except Exception:
            _warn("on_denied", "ratekeeper: on_denied hook raised; default 429", exc_info=True)
            return None


def _valid_cost(cost: Any) -> bool:
    return not isinstance(cost, bool) and isinstance(cost, int | float) and 0 <= cost < math.inf


class _StoreCall:
    """A step of the flow that is a store call (an asyncio limiter's ``hit``), as opposed to a
    user function's awaitable: blocking code waits for it at most ``bridge_timeout``."""

    __slots__ = ("call",)

    def __init__(self, call: Awaitable[Decision]) -> None:
        self.call = call


def scope_of(func: Callable[..., Any]) -> str:
    """The default budget name of a decorated view: its module and qualified name."""
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{name}"
