"""The engine every framework adapter drives.

An adapter turns its framework's request into a :class:`RequestView` and asks an :class:`Engine`
to check a list of :class:`LimitRule`; the engine answers an :class:`Outcome` (the decision to
report, and whether the request may go on). On a denial the adapter asks :meth:`Engine.deny` for
the response (``on_denied``'s, else its ``respond`` applied to the default :class:`Denial`). The
adapter only converts: request to view, outcome to response.

Stores and limiters come from the registry layer: the engine's store is
``registry.store(store)`` (a :class:`StorePair`, both faces of one store) and each distinct
(scope, algorithm, limits, shadow settings) gets the registry's cached limiter, named by the
rule's scope (so metrics and observers' labels say which rule decided). An engine has its own
private :class:`Registry` unless given one, so two apps never share inline budgets; that private
registry reports to the default registry's observers (``rk.observe``), and names
(``limiter="api"``) are looked up in the default registry. With ``registry=``, both are that
registry's. An unknown name is a `ConfigError` when the rule is made (app setup, decoration),
never at a request.

Shadow mode: a rule whose limiter is in shadow mode (``shadow=True``, engine-wide or per rule, or
a named limiter defined so) never denies, not even on a store outage with
``on_store_error="deny"``, and sends no rate-limit headers: turning it on changes nothing a
client sees. Its would-be denials are counted as ``shadow_denied`` by the limiter.

Sync and async: the check and the denial are each written once, as a generator of steps
(:meth:`Engine._flow`, :meth:`Engine._denial`) that yields whatever must be awaited (an async key,
cost, limit or ``on_denied`` function; an async limiter's ``hit``); the two drivers of
:mod:`ratekeeper._drive` run them, blocking (:meth:`Engine.check`, :meth:`Engine.deny`) or
awaited (:meth:`Engine.check_async`, :meth:`Engine.deny_async`). A dynamic limit that raises or
is not a rate skips its rule, logged.

Blocking code with an asyncio store (Flask or sync Django given an ``AsyncRedisStore``) runs each
store call on the engine's one long-lived event loop thread (:class:`LoopThread`), waiting at most
``bridge_timeout`` for it; past that the store counts as unavailable and ``on_store_error``
decides, so a blocking request is answered within that bound whatever the store does.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import re
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, TypeVar, Unpack, cast

import ratekeeper.registry as _registry
from ratekeeper._drive import drive, drive_async
from ratekeeper.algorithms import get_algorithm
from ratekeeper.config import unknown_name
from ratekeeper.decision import RESET_FORMATS, Decision, ResetFormat
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.events import Observer
from ratekeeper.integrations.keys import (
    CostSpec,
    IPNetwork,
    Key,
    KeySpec,
    KeyTemplate,
    LimitSpec,
    RequestView,
    ViewFunction,
    budget_key,
    client_ip,
    kind_and_value,
    peer_key,
    storage_key,
    user_id,
    warn,
)
from ratekeeper.integrations.loop import LoopThread
from ratekeeper.integrations.rules import (
    HEADER_GROUP_OF,
    HEADER_GROUPS,
    Denial,
    HeaderGroup,
    LevelKey,
    LimitRule,
    Outcome,
    RuleOptions,
    check_rule_options,
    method_set,
    path_matchers,
)
from ratekeeper.limiter import AsyncRateLimiter, OnStoreError, RateLimiter
from ratekeeper.limits import Limit, to_limits
from ratekeeper.policies._async_chain import AsyncChain
from ratekeeper.policies.chain import ChainCore
from ratekeeper.registry import DEFAULT_MAX_LIMITERS, Registry, StorePair, StoreSpec

# Seconds blocking code waits for an asyncio store's answer before it counts the store as
# unavailable: the stores' own 0.5 s deadline plus room, inside the 1.0 s decision bound.
BRIDGE_TIMEOUT = 0.75

R = TypeVar("R")
Respond = Callable[[Denial], R]  # an adapter's default 429: the framework's response to a Denial
RuleLimiters = dict[LimitRule, RateLimiter | AsyncRateLimiter]
_FAILED = object()  # what a user function that raised returns (logged)
# A plain rule as `Engine.check_now` runs it: the rule, its budget's key head, limiter and cost.
Planned = tuple[LimitRule, str, RateLimiter, float]


class Engine:
    """Configuration and decisions shared by every framework adapter.

    ``limits``: app-wide default limit (string, `Limit`(s) or callable), applied to every
    non-exempt request under scope ``"default"`` (a named ``limiter``: under its name);
    ``rules``: more `LimitRule`\\ s; ``key``: the default key function (client address,
    honouring ``trusted_proxies``); ``cost``: default cost;
    ``store``: URL or store object (one store, shared by every limiter the engine builds);
    ``algorithm``, ``clock``; ``on_store_error``: ``"allow"`` (default: a dead store must not take
    the site down; logged; it also decides when a named limiter's store fails), ``"deny"`` or
    ``"raise"``; ``exempt_paths`` (prefixes or compiled
    regexes) and ``exempt_methods`` (default OPTIONS, for CORS preflights); ``headers``: True,
    False, or the groups to send among ``"ratelimit"`` (IETF ``RateLimit``/``RateLimit-Policy``),
    ``"x-ratelimit"`` and ``"retry-after"``; ``reset_header``: ``"seconds"`` (default) or
    ``"epoch"`` for ``X-RateLimit-Reset`` as a Unix time (netrun's convention); ``on_denied``:
    ``(request, decision)`` returning the framework's response (or None for the default JSON
    429); ``key_prefix`` (default none: the
    stores namespace their keys already) separates engines sharing one store; ``enabled=False``
    switches limiting off; ``bridge_timeout``: how long blocking code waits for an asyncio
    store (default 0.75 s) before ``on_store_error`` decides; ``registry``: the registry that
    builds the store, caches the limiters and resolves names (default: a private one of
    ``max_limiters`` for inline limits, following the default registry's observers, and the
    default registry for names); ``limiter``: the name of a registry limiter, or a `Chain` /
    `AsyncChain` (``keys``: its key per level, see `LimitRule`), for the app-wide default
    instead of ``limits``; ``shadow=True``: no inline rule ever denies (each would-be
    denial counted as ``shadow_denied``); ``observers``: more observers of every limiter the
    engine uses (see `ratekeeper.events`); ``check_names=False`` records unknown names for
    :meth:`check_names` instead of raising (Flask, before ``init_app`` reads its config).

    Store keys are ``[key_prefix:]scope:kind:value`` (:func:`storage_key`), unambiguous: a custom
    key function's value is of kind ``custom`` and cannot reach a built-in key's budget.

    One limiter is built per distinct (scope, algorithm, limits) and cached by the registry, so a
    dynamic limit costs a dict lookup per request, not a limiter.
    """

    def __init__(
        self,
        limits: LimitSpec | None = None,
        *,
        rules: Iterable[LimitRule] = (),
        key: KeySpec | None = None,
        cost: CostSpec = 1,
        store: StoreSpec = None,
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
        max_limiters: int = DEFAULT_MAX_LIMITERS,
        bridge_timeout: float = BRIDGE_TIMEOUT,
        registry: Registry | None = None,
        limiter: str | ChainCore | None = None,
        keys: Sequence[LevelKey] | None = None,
        shadow: bool = False,
        observers: Iterable[Observer] = (),
        check_names: bool = True,
        reset_header: ResetFormat = "seconds",
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
        self.exempt_paths = path_matchers(exempt_paths)
        self.exempt_methods = method_set(exempt_methods) or frozenset()
        if headers is True:
            self.header_groups = HEADER_GROUPS
        elif headers is False or headers is None:
            self.header_groups = frozenset()
        else:
            self.header_groups = frozenset(headers)
            unknown = self.header_groups - HEADER_GROUPS
            if unknown:
                raise ConfigError(f"unknown header groups {sorted(unknown)}; use {HEADER_GROUPS}")
        if reset_header not in RESET_FORMATS:
            raise ConfigError(f"reset_header must be 'seconds' or 'epoch', got {reset_header!r}")
        self.reset_header: ResetFormat = reset_header
        # Every header group, X-RateLimit-Reset in seconds: a decision's own headers() as is.
        self.standard_headers = self.header_groups is HEADER_GROUPS and reset_header == "seconds"
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
        if not isinstance(shadow, bool):
            raise ConfigError(f"shadow must be True or False, got {shadow!r}")
        self.shadow = shadow
        self.observers: tuple[Observer, ...] = tuple(observers)
        for observer in self.observers:
            if not callable(getattr(observer, "observe", None)):
                raise ConfigError(f"an observer needs an observe(event) method, got {observer!r}")
        self._observed: weakref.WeakSet[Any] = weakref.WeakSet()  # named limiters given them
        if registry is None:
            self.names = _registry.default_registry
            self.registry = Registry(max_limiters=max_limiters, observed_by=self.names)
        else:
            self.names = self.registry = registry
        self._unchecked: list[str] | None = None if check_names else []
        self.rules: list[LimitRule] = []
        if limits is not None or limiter is not None:
            scope = "default" if limiter is None else None  # a named limiter or chain: its own
            self.rules.append(self.rule(limits, scope=scope, limiter=limiter, keys=keys))
        elif keys is not None:
            raise ConfigError("keys= (one key per level) is for a chain: limiter=Chain(...)")
        for rule in rules:
            if rule.limiter is not None:
                self._check_name(rule.limiter)
            elif rule.chain is not None:
                self._check_chain(rule)
            self.rules.append(rule)
        self.store: StorePair = self.registry.store(store)
        # A URL gives both faces; a store object only its own (the other one is a ConfigError).
        self._blocking_face = _has_face(self.store, self.store.sync)
        self._asyncio_face = _has_face(self.store, self.store.async_)
        # The memory store never blocks: asyncio code calls its synchronous face directly (one
        # coroutine and one step of the flow less per request; the same store, the same state).
        self._in_memory = (
            self.store.url is None
            and self._blocking_face
            and type(self.store.sync()) is type(self.registry.memory)  # a memory store
        )
        self._parsed: dict[str, tuple[Limit, ...] | None] = {}
        # The limiter of each static inline rule, by face (blocking, asyncio): one dict lookup per
        # request instead of the registry's (options sorted, limits hashed). Forgotten whenever
        # the registry evicts a limiter, so that whatever the registry later gives its limiters
        # (observers) reaches these too.
        self._rule_limiters: tuple[RuleLimiters, RuleLimiters] = ({}, {})
        self._evictions_seen = self.registry.evictions
        self._heads: dict[str, str] = {}
        self._planned: tuple[int, tuple[LimitRule, ...], list[Planned] | None] = (-1, (), None)
        self._peer_keys = self.client_key.by_peer

    def close(self) -> None:
        """Close the synchronous store if the engine built it from a URL, and stop the engine's
        event loop thread (if blocking code used one)."""
        self.store.close()
        self._loop.stop()

    async def aclose(self) -> None:
        """Close the stores the engine built from a URL (call it on application shutdown)."""
        if isinstance(self.store.spec, str):
            await self.store.aclose()
            self._loop.stop()

    def rule(
        self,
        limit: LimitSpec | None = None,
        *,
        target: object = None,
        paths: Iterable[str | re.Pattern[str]] | None = None,
        **options: Unpack[RuleOptions],
    ) -> LimitRule:
        """A rule using this engine's defaults for what is not given: its cost, and, without
        ``scope``, the named limiter's name or the budget of ``target`` (the decorated view, see
        :func:`scope_of`). A ``limiter`` name must be known to the engine's registry now."""
        check_rule_options(options)
        name = options.get("limiter")
        scope = options.get("scope")
        if not scope and not isinstance(name, ChainCore):  # a chain's default scope: "chain"
            scope = name or (scope_of(target) if target is not None else None)
        cost = options.get("cost")
        rule = LimitRule(
            limit,
            scope=scope,
            key=options.get("key"),
            cost=self.default_cost if cost is None else cost,
            methods=options.get("methods"),
            paths=paths,
            algorithm=options.get("algorithm"),
            limiter=name,
            keys=options.get("keys"),
            shadow=options.get("shadow"),
            shadow_limits=options.get("shadow_limits"),
        )
        if rule.limiter is not None:
            self._check_name(rule.limiter)
        elif rule.chain is not None:
            self._check_chain(rule)
        return rule

    def _check_chain(self, rule: LimitRule) -> None:
        """A `ConfigError` if the engine is in shadow mode and the rule's chain is not."""
        if self.shadow and not rule.shadow:
            raise ConfigError(
                f"the engine is in shadow mode but {rule.chain!r} is not, and a chain's settings "
                "are its levels': build its limiters with shadow=True, or drop the engine's shadow"
            )

    def _check_name(self, name: str) -> None:
        """A `ConfigError` unless ``name`` is a limiter of the registry (recorded instead while
        names are checked later), or if the engine is in shadow mode and the limiter is not."""
        known = self.names.list_limiters()
        if name not in known:
            if self._unchecked is not None:
                self._unchecked.append(name)
                return
            raise ConfigError(unknown_name("limiter", name, known))
        if self.shadow and not known[name].get("shadow"):
            raise ConfigError(
                f"the engine is in shadow mode but limiter {name!r} is not, and a named "
                f"limiter's settings are its definition's: define {name!r} with shadow=True "
                "(e.g. RATEKEEPER_LIMITERS__<NAME>__SHADOW=true), or drop the engine's shadow"
            )

    def check_names(self) -> None:
        """Check the names recorded since the engine was built with ``check_names=False``
        (`ConfigError` for an unknown one), and check every later name at once."""
        names, self._unchecked = self._unchecked or [], None
        for name in names:
            self._check_name(name)

    def is_exempt(self, view: RequestView) -> bool:
        """True when the request is never limited: limiting is off, or its method or path is
        exempt (``exempt_methods``, ``exempt_paths``)."""
        if not self.enabled or view.method.upper() in self.exempt_methods:
            return True
        return bool(self.exempt_paths) and any(match(view.path) for match in self.exempt_paths)

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
        if self.reset_header == "seconds":
            headers = decision.headers()
        else:  # a Unix time on the engine's clock (the limiters' clock)
            headers = decision.headers(self.reset_header, self.clock() if self.clock else None)
        if groups is HEADER_GROUPS:  # every group: nothing to filter
            return headers
        return {
            name: value
            for name, value in headers.items()
            if HEADER_GROUP_OF.get(name, "ratelimit") in groups
        }

    def denial(self, decision: Decision) -> Denial:
        """The default response to ``decision``: the JSON 429 with this engine's headers."""
        return Denial.of(decision, self.response_headers(decision))

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
            warn(
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
        self, rule: LimitRule, limits: tuple[Limit, ...], asynchronous: bool
    ) -> RateLimiter | AsyncRateLimiter:
        """The registry's limiter for an inline ``rule`` with these limits on the engine's store
        (built once), named by the rule's scope."""
        options: dict[str, Any] = {}
        if self.shadow if rule.shadow is None else rule.shadow:
            options["shadow"] = True
        if rule.shadow_limits is not None:
            options["shadow_limits"] = rule.shadow_limits
        if self.observers:
            options["observers"] = self.observers
        return self.registry.limiter(
            self.store,
            limits,
            asynchronous=asynchronous,
            algorithm=rule.algorithm or self.algorithm,
            clock=self.clock,
            on_store_error=self.on_store_error,
            name=rule.scope,
            **options,
        )

    def rule_limiter(
        self, rule: LimitRule, limits: tuple[Limit, ...], asynchronous: bool
    ) -> RateLimiter | AsyncRateLimiter:
        """:meth:`limiter`, remembered per rule for its static limits (a dynamic limit's value
        goes to the registry every time)."""
        if limits is not rule.static:
            return self.limiter(rule, limits, asynchronous)
        if self.registry.evictions != self._evictions_seen:
            self._rule_limiters = ({}, {})
            self._evictions_seen = self.registry.evictions
        known = self._rule_limiters[asynchronous]
        found = known.get(rule)
        if found is None:
            if len(known) >= self.max_limiters:  # rules made per call: stay bounded
                known.clear()
            found = known[rule] = self.limiter(rule, limits, asynchronous)
        return found

    def _plain(self, rule: LimitRule) -> bool:
        """Whether ``rule`` can be checked without a flow: an inline static limit on the memory
        store, keyed by client address, at a fixed cost (nothing to await, nothing to yield)."""
        return (
            rule.static is not None
            and rule.limiter is None
            and rule.chain is None
            and not callable(rule.cost)
            and (rule.key or self.default_key) is self.client_key
        )

    def check_now(
        self, view: RequestView, rules: Sequence[LimitRule] | None = None
    ) -> Outcome | None:
        """The check of :meth:`check`, run straight through when it has nothing to wait for: the
        store is the memory store and every rule is plain (:meth:`_plain`): the same limiters,
        keys and outcome, without a generator and its driver. None when it does not apply (then
        call :meth:`check` or :meth:`check_async`)."""
        if not self._in_memory:
            return None
        plan = self._plan(rules)
        if plan is None:
            return None
        outcome = Outcome()
        client = None
        for rule, head, limiter, cost in plan:
            if (rule.methods is not None or rule.paths) and not rule.applies(view):
                continue
            if client is None:
                known = self._peer_keys
                client = known.get(view.client) if known is not None else None
                if client is None:
                    client = self._client(view)
            try:
                decision = limiter.hit(f"{head}:{client.stored}", cost)
            except StoreUnavailable as exc:
                decision = self._outage(rule.static, exc)  # type: ignore[arg-type]
            if _record(outcome, rule, decision, limiter.shadow):
                break
        return outcome

    def _plan(self, rules: Sequence[LimitRule] | None) -> list[Planned] | None:
        """What :meth:`check_now` runs for ``rules`` (default: the engine's own, planned once
        until its rules change or the registry evicts a limiter): each rule with its budget's
        key head, limiter and cost; None unless every rule is plain."""
        own = rules is None or rules is self.rules
        if own:
            rules = self.rules
            evictions, planned_rules, plan = self._planned
            if evictions == self.registry.evictions and planned_rules == tuple(rules):
                return plan
        assert rules is not None
        plain = self._plain
        if all(plain(rule) for rule in rules):
            plan = [
                (
                    rule,
                    self._head(rule.scope),
                    cast(RateLimiter, self.rule_limiter(rule, rule.static, False)),  # type: ignore[arg-type]
                    float(rule.cost),  # type: ignore[arg-type]
                )
                for rule in rules
            ]
        else:
            plan = None
        if own:
            self._planned = (self.registry.evictions, tuple(rules), plan)
        return plan

    def _head(self, scope: str) -> str:
        """The storage key's ``[prefix:]scope`` part for a budget (:func:`storage_key`),
        remembered per scope."""
        head = self._heads.get(scope)
        if head is None:
            head = budget_key(scope, self.key_prefix)
            if len(self._heads) >= self.max_limiters:
                self._heads.clear()
            self._heads[scope] = head
        return head

    def named(self, name: str, asynchronous: bool) -> RateLimiter | AsyncRateLimiter:
        """The registry limiter ``name``: the face the caller runs (``asynchronous``), or the
        other one when its store has only that one. It reports to the engine's observers too."""
        names = self.names
        try:
            found: RateLimiter | AsyncRateLimiter = (
                names.get_async_limiter(name) if asynchronous else names.get_limiter(name)
            )
        except ConfigError as exc:
            try:
                found = names.get_limiter(name) if asynchronous else names.get_async_limiter(name)
            except ConfigError:
                raise exc from None
        if self.observers and found not in self._observed:
            for observer in self.observers:
                found.add_observer(observer)
            self._observed.add(found)
        return found

    # -- the check and the denial, once each, and their two drivers --

    def _call(
        self, what: str, func: Callable[..., Any], *args: Any, message: str = ""
    ) -> Generator[Any, Any, Any]:
        """Call a user or built-in function; yield its result if awaitable; _FAILED (logged,
        with ``message`` if given) if it raised."""
        try:
            result = func(*args)
            if inspect.isawaitable(result):
                result = yield result
        except Exception:
            if message:
                warn(what, message, exc_info=True)
            else:
                warn(
                    what,
                    "ratekeeper: the %s function %r raised",
                    what,
                    func,
                    exc_info=True,
                )
            return _FAILED
        return result

    def _call_on(
        self, what: str, func: Callable[[Any], Any], view: RequestView
    ) -> Generator[Any, Any, Any]:
        """:meth:`_call` with the request: the view for a `ViewFunction`, else the native one."""
        return self._call(what, func, view if isinstance(func, ViewFunction) else view.native)

    def _flow(
        self, view: RequestView, rules: Sequence[LimitRule], asynchronous: bool
    ) -> Generator[Any, Any, Outcome]:
        outcome = Outcome()
        for rule in rules:
            if not rule.applies(view):
                continue
            if rule.chain is not None:
                decision: Decision = yield from self._chain_flow(
                    rule, rule.chain, view, asynchronous
                )
                if _record(outcome, rule, decision, bool(rule.shadow)):
                    return outcome
                continue
            limiter: RateLimiter | AsyncRateLimiter | None = None
            if rule.limiter is not None:
                limiter = self.named(rule.limiter, asynchronous)
            limits = rule.static if limiter is None else limiter.limits
            if limits is None:
                value = yield from self._call_on("limit", rule.limit, view)  # type: ignore[arg-type]
                if value is _FAILED:
                    continue
                limits = self._limits(value)
                if limits is None:
                    continue
            key = storage_key(rule.scope, (yield from self._key(rule, view)), self.key_prefix)
            cost = rule.cost
            if callable(cost):
                cost = yield from self._cost(cost, view)
            if limiter is None:
                limiter = self.rule_limiter(rule, limits, asynchronous and not self._in_memory)
            try:
                if isinstance(limiter, AsyncRateLimiter):
                    decision = yield _StoreCall(limiter.hit(key, float(cost)))
                elif asynchronous and not (self._in_memory and rule.limiter is None):
                    # a named limiter whose store is synchronous only
                    decision = yield _StoreCall(asyncio.to_thread(limiter.hit, key, float(cost)))
                else:
                    decision = limiter.hit(key, float(cost))
            except StoreUnavailable as exc:  # no answer in time, or a named limiter's store
                decision = self._outage(limits, exc)
            if _record(outcome, rule, decision, limiter.shadow):
                return outcome
        return outcome

    def _cost(self, func: Callable[[Any], Any], view: RequestView) -> Generator[Any, Any, Any]:
        """A cost function's value; 1 when it raised or is not a number >= 0 (logged)."""
        cost = yield from self._call_on("cost", func, view)
        if cost is _FAILED or not _valid_cost(cost):
            if cost is not _FAILED:
                warn("cost", "ratekeeper: cost %r is not a number >= 0; using 1", cost)
            cost = 1
        return cost

    def _chain_flow(
        self, rule: LimitRule, chain: ChainCore, view: RequestView, asynchronous: bool
    ) -> Generator[Any, Any, Decision]:
        """One request against every level of a chain rule, all-or-nothing: the level keys, the
        cost, the chain's hit (an `AsyncChain` under blocking code: on the engine's loop within
        ``bridge_timeout``; a blocking chain on a network store under asyncio: in a worker
        thread), then each level counts and reports it as its own hit would."""
        keys = yield from self._level_keys(rule, view)
        cost = rule.cost
        if callable(cost):
            cost = yield from self._cost(cost, view)
        if self.observers and chain not in self._observed:
            for level in chain.limiters:
                for observer in self.observers:
                    level.add_observer(observer)
            self._observed.add(chain)
        try:
            if isinstance(chain, AsyncChain):
                decision: Decision = yield _StoreCall(chain.hit(*keys, cost=float(cost)))
            elif asynchronous and not isinstance(chain.store, type(self.registry.memory)):
                call = asyncio.to_thread(chain.hit, *keys, cost=float(cost))  # type: ignore[attr-defined]
                decision = yield _StoreCall(call)
            else:
                decision = chain.hit(*keys, cost=float(cost))  # type: ignore[attr-defined]
        except StoreUnavailable as exc:  # no answer in time, or the levels' on_store_error
            return self._outage(chain.limiters[0].limits, exc)
        if not decision.fallback:
            levels = decision.details if len(chain) > 1 else (decision,)
            for level, key, detail in zip(chain.limiters, keys, levels, strict=True):
                if decision.allowed or not detail.allowed:  # a denial: the levels that denied
                    level._settle(key, detail, None, None, 0.0)
        return decision

    def _level_keys(self, rule: LimitRule, view: RequestView) -> Generator[Any, Any, list[str]]:
        """The storage key of each level of a chain rule: its template filled from the request,
        or its key function's value (:meth:`_key_of`); without ``keys``, the rule's key for
        every level."""
        scope, prefix = rule.scope, self.key_prefix
        if rule.keys is None:
            key = storage_key(scope, (yield from self._key(rule, view)), prefix)
            return [key] * len(rule.chain or ())
        keys: list[str] = []
        for spec in rule.keys:
            if not isinstance(spec, KeyTemplate):
                keys.append(storage_key(scope, (yield from self._key_of(spec, view)), prefix))
                continue
            values: dict[str, str | None] = {}
            if "key" in spec.fields:
                values["key"] = kind_and_value((yield from self._key(rule, view)))
            rendered = spec.render(functools.partial(self._field, view, values))
            if rendered is None:
                warn(
                    "key-template",
                    "ratekeeper: key template %r has a field without a value in this request; "
                    "keying the level by client address",
                    spec.text,
                )
                keys.append(storage_key(scope, self._client(view), prefix))
            else:
                keys.append(storage_key(scope, rendered, prefix))
        return keys

    def _field(
        self, view: RequestView, values: dict[str, str | None], name: str, argument: str | None
    ) -> str | None:
        """The value of a key template's field in this request (None: it has none)."""
        if name == "key":
            return values["key"]
        if name == "ip":
            return self._client(view).value
        if name == "user":
            return None if view.get_user is None else user_id(view.get_user())
        if name == "header":
            return (view.header(argument or "") or "").strip() or None
        if name == "method":
            return view.method.upper()
        if name == "route":
            return view.route or view.path
        return view.path

    def _client(self, view: RequestView) -> Key:
        """The client address key, never failing (the socket peer as a last resort)."""
        known = self._peer_keys
        if known is not None:
            found = known.get(view.client)
            if found is not None:
                return found
        try:
            return self.client_key(view)  # type: ignore[no-any-return]
        except Exception:
            warn("key", "ratekeeper: the key function %r raised", self.client_key, exc_info=True)
            return peer_key(view)

    def _key(self, rule: LimitRule, view: RequestView) -> Generator[Any, Any, str]:
        """The rule's key function's value (engine default when it has none), see
        :meth:`_key_of`."""
        return (yield from self._key_of(rule.key or self.default_key, view))

    def _key_of(self, func: KeySpec, view: RequestView) -> Generator[Any, Any, str]:
        """A key function's value: a non-empty string as is, an int as its decimal string;
        anything else (None, "", an object that would make a new key per request) is logged and
        the request is keyed by client address."""
        if func is self.client_key:  # the built-in default: synchronous, reads the view
            return self._client(view)
        value = yield from self._call_on("key", func, view)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is not _FAILED:
            warn(
                "key-value",
                "ratekeeper: key function %r returned %r, not a non-empty str or an int; "
                "keying by client address",
                func,
                value if value is None or isinstance(value, str) else type(value),
            )
        if func is not self.client_key:  # the client address, honouring trusted proxies
            value = yield from self._call_on("key", self.client_key, view)
            if isinstance(value, str) and value:
                return value
        return peer_key(view)

    def _outage(self, limits: tuple[Limit, ...], exc: StoreUnavailable) -> Decision:
        """The ``on_store_error`` decision when the store gave no answer in time."""
        if self.on_store_error == "raise":
            raise exc
        warn(
            "store-timeout",
            "ratekeeper: rate limit store unavailable (%s); %s requests",
            exc,
            "allowing" if self.on_store_error == "allow" else "denying",
        )
        limit = limits[0]
        if self.on_store_error == "allow":
            return Decision(True, limit.amount, limit.amount, 0.0, 0.0, 0.0, limit, True)
        return Decision(False, limit.amount, 0, 1.0, 1.0, 0.0, limit, True)

    def _denial(
        self, native: Any, decision: Decision, respond: Respond[R]
    ) -> Generator[Any, Any, R | Any]:
        """``on_denied``'s response when it gives one, else ``respond`` to the default
        :class:`Denial`."""
        if self.on_denied is not None:
            custom = yield from self._call(
                "on_denied",
                self.on_denied,
                native,
                decision,
                message="ratekeeper: on_denied hook raised; default 429",
            )
            if custom is not None and custom is not _FAILED:
                return custom
        return respond(self.denial(decision))

    def check(self, view: RequestView, rules: Sequence[LimitRule] | None = None) -> Outcome:
        """Check ``view`` against ``rules`` (default: the engine's rules) from blocking code.
        Awaitables returned by key/cost/limit functions are run to completion on the engine's
        event loop thread; with only an asyncio store, so are the store calls, each within
        ``bridge_timeout``."""
        rules = self.rules if rules is None else rules
        outcome = self.check_now(view, rules)
        if outcome is not None:
            return outcome
        return drive(self._flow(view, rules, not self._blocking_face), self._run_step)

    async def check_async(
        self, view: RequestView, rules: Sequence[LimitRule] | None = None
    ) -> Outcome:
        """Check ``view`` against ``rules`` (default: the engine's rules) with asyncio limiters
        (with only a synchronous store, the blocking check runs in a worker thread)."""
        rules = self.rules if rules is None else rules
        outcome = self.check_now(view, rules)
        if outcome is not None:
            return outcome
        if not self._asyncio_face:
            return await asyncio.to_thread(self.check, view, rules)
        return await drive_async(self._flow(view, rules, True), _await_step)

    def deny(self, native: Any, decision: Decision, respond: Respond[R]) -> R | Any:
        """The response to a denied request, from blocking code: ``on_denied(native, decision)``
        (an awaitable one runs on the engine's loop) unless it returns None, else
        ``respond(self.denial(decision))``: the framework's default 429. A hook that raises is
        logged and the default is sent."""
        return drive(self._denial(native, decision, respond), self._run_step)

    async def deny_async(self, native: Any, decision: Decision, respond: Respond[R]) -> R | Any:
        """:meth:`deny`, with an async ``on_denied`` awaited."""
        return await drive_async(self._denial(native, decision, respond), _await_step)

    def _run_step(self, step: Any) -> Any:
        """A step of a flow, from blocking code: a store call within ``bridge_timeout`` (past
        it, `StoreUnavailable`), any other awaitable on the engine's loop."""
        if isinstance(step, _StoreCall):
            try:
                return self._loop.run(step.call, self.bridge_timeout)
            except TimeoutError as exc:
                raise StoreUnavailable(f"no answer from the store within {exc}") from None
        return self.run_sync(step)

    def run_sync(self, value: Any) -> Any:
        """Run an awaitable to completion on the engine's event loop thread, from blocking code
        (plain values pass through). Blocking checks run async key functions and asyncio store
        calls there; close an asyncio store object used from blocking code there too:
        ``engine.run_sync(store.close())``."""
        return self._loop.run(value) if inspect.isawaitable(value) else value


def _record(outcome: Outcome, rule: LimitRule, decision: Decision, shadow: bool) -> bool:
    """Add ``rule``'s ``decision`` to ``outcome``; True when it denies (the check stops). A
    shadow rule never denies, and nothing of it shows in the headers; otherwise the decision to
    report is the denial, else the allowed one with least remaining (a fallback knows none)."""
    outcome.decisions[rule.scope] = decision
    if shadow:
        return False
    if not decision.allowed:  # a denial (or a store outage with on_store_error="deny")
        outcome.allowed, outcome.decision, outcome.rule = False, decision, rule
        return True
    if not decision.fallback and (
        outcome.decision is None or decision.remaining < outcome.decision.remaining
    ):
        outcome.decision, outcome.rule = decision, rule
    return False


async def _await_step(step: Any) -> Any:
    """A step of a flow, from async code: awaited."""
    return await (step.call if isinstance(step, _StoreCall) else step)


def _has_face(store: StorePair, face: Callable[[], object]) -> bool:
    """Whether ``store`` has this face (sync or asyncio) without building it: a URL has both."""
    if store.url is not None:
        return True
    try:
        face()
    except ConfigError:
        return False
    return True


def _valid_cost(cost: Any) -> bool:
    return not isinstance(cost, bool) and isinstance(cost, int | float) and 0 <= cost < math.inf


class _StoreCall:
    """A step of the flow that is a store call (an asyncio limiter's ``hit``), as opposed to a
    user function's awaitable: blocking code waits for it at most ``bridge_timeout``."""

    __slots__ = ("call",)

    def __init__(self, call: Awaitable[Decision]) -> None:
        self.call = call


def scope_of(func: object) -> str:
    """The default budget name of a decorated view: its module and qualified name."""
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{name}"
