"""Rules: which requests a limit applies to (methods, paths), with which key, cost and budget
(scope); the options every framework's limit decorator takes (:class:`RuleOptions`); the outcome
of checking a request; the default 429 (:class:`Denial`)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError
from ratekeeper.integrations.keys import CostSpec, KeySpec, KeyTemplate, LimitSpec, RequestView
from ratekeeper.limiter import Limits
from ratekeeper.limits import Limit, to_limits
from ratekeeper.policies.chain import ChainCore

HeaderGroup = Literal["ratelimit", "x-ratelimit", "retry-after"]
HEADER_GROUPS: frozenset[str] = frozenset({"ratelimit", "x-ratelimit", "retry-after"})
HEADER_GROUP_OF = {
    "RateLimit": "ratelimit",
    "RateLimit-Policy": "ratelimit",
    "X-RateLimit-Limit": "x-ratelimit",
    "X-RateLimit-Remaining": "x-ratelimit",
    "X-RateLimit-Reset": "x-ratelimit",
    "Retry-After": "retry-after",
}
DENIED_STATUS = 429
JSON = "application/json"
CHAIN_SCOPE = "chain"  # the default budget name of a chain: one budget per key wherever it is used
LevelKey = str | KeySpec  # a chain level's key: a template (`KeyTemplate`) or a key function


class RuleOptions(TypedDict, total=False):
    """The keywords of every framework's limit decorator (``@limiter.limit(limit, **options)``,
    Django's ``@ratelimit``, FastAPI's ``RateLimit``), passed through to :meth:`Engine.rule`:
    ``key`` and ``cost`` (engine defaults when None), ``scope`` (the budget's name; default: the
    named limiter's name, ``"chain"`` for a chain, else the decorated view's), ``methods``
    (where the rule applies), ``algorithm`` (engine default), ``limiter`` (a registry limiter's
    name, or a `Chain` / `AsyncChain`, instead of an inline limit), ``keys`` (a chain's key per
    level: templates or key functions), ``shadow`` (evaluate and count, never deny; engine
    default) and ``shadow_limits`` (candidate limits evaluated beside the enforced ones, never
    denying)."""

    key: KeySpec | None
    cost: CostSpec | None
    scope: str | None
    methods: Iterable[str] | None
    algorithm: str | None
    limiter: str | ChainCore | None
    keys: Sequence[LevelKey] | None
    shadow: bool | None
    shadow_limits: Limits | None


RULE_OPTIONS = frozenset(RuleOptions.__annotations__)


def check_rule_options(options: Mapping[str, object]) -> None:
    """Raise `TypeError` for a keyword that is not one of the `RuleOptions` (as a signature would,
    for decorators that build their rule later)."""
    unknown = sorted(options.keys() - RULE_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}; use {sorted(RULE_OPTIONS)}")


def path_matchers(items: Iterable[str | re.Pattern[str]] | None) -> tuple[Any, ...]:
    """Matchers of a path: a string is a prefix, a compiled regex matches from the start."""
    if items is None:
        return ()
    if isinstance(items, str | re.Pattern):
        items = [items]
    matchers: list[Any] = []
    for item in items:
        if isinstance(item, re.Pattern):
            matchers.append(item.match)
        elif isinstance(item, str):
            matchers.append(_prefix(item))
        else:
            raise ConfigError(f"a path must be a prefix string or a compiled regex, got {item!r}")
    return tuple(matchers)


def _prefix(prefix: str) -> Callable[[str], bool]:
    return lambda p: p.startswith(prefix)


def method_set(items: Iterable[str] | None) -> frozenset[str] | None:
    """HTTP methods in upper case (None: every method)."""
    if items is None:
        return None
    if isinstance(items, str):
        items = [items]
    return frozenset(method.upper() for method in items)


class LimitRule:
    """One limit applied to requests: ``limit`` (a rate string, `Limit`, sequence of limits, or a
    callable of the request returning one of those, or None for "no limit", e.g. by tenant
    tier) or ``limiter`` (the name of a registry limiter, whose limits, algorithm and store
    apply), ``key`` (key function, engine default when None), ``cost`` (number or callable),
    ``scope`` (the budget's name: rules with the same scope share one budget per key; default:
    the limiter's name), ``methods``/``paths`` (restrict where it applies; paths are prefixes or
    compiled regexes), ``algorithm`` (engine default when None), ``shadow`` (never deny; engine
    default when None) and ``shadow_limits`` (candidate limits, counted, never denying). A named
    limiter's algorithm and shadow settings are its definition's, so those options are errors
    beside ``limiter``.

    ``limiter`` may also be a `Chain` (or `AsyncChain`): every level, all-or-nothing, with
    ``keys`` one key per level, each a template (:class:`KeyTemplate`: ``"global"``,
    ``"tenant:{header[X-Tenant]}"``, ``"user:{user}"``) or a key function of the request;
    without ``keys`` every level is keyed by ``key``. Its limits, algorithms and shadow settings
    are its levels' (the same errors beside it), and its default scope is ``"chain"``: one
    budget per key wherever the chain is used.
    """

    __slots__ = (
        "algorithm",
        "chain",
        "cost",
        "key",
        "keys",
        "limit",
        "limiter",
        "methods",
        "paths",
        "scope",
        "shadow",
        "shadow_limits",
        "static",
    )

    def __init__(
        self,
        limit: LimitSpec | None = None,
        *,
        scope: str | None = None,
        key: KeySpec | None = None,
        cost: CostSpec = 1,
        methods: Iterable[str] | None = None,
        paths: Iterable[str | re.Pattern[str]] | None = None,
        algorithm: str | None = None,
        limiter: str | ChainCore | None = None,
        keys: Sequence[LevelKey] | None = None,
        shadow: bool | None = None,
        shadow_limits: Limits | None = None,
    ) -> None:
        self.static: tuple[Limit, ...] | None = None
        self.chain: ChainCore | None = None
        self.keys: tuple[KeyTemplate | KeySpec, ...] | None = None
        if isinstance(limiter, ChainCore):
            _no_clashes(
                "a chain: its limits, algorithms and shadow settings are its levels'",
                limit=limit,
                algorithm=algorithm,
                shadow=shadow,
                shadow_limits=shadow_limits,
            )
            self.chain, self.keys = limiter, level_keys(keys, len(limiter))
            shadow = chain_shadow(limiter)
            scope, limiter = scope or CHAIN_SCOPE, None
        elif keys is not None:
            raise ConfigError("keys= (one key per level) is for a chain: limiter=Chain(...)")
        elif limiter is not None:
            if not isinstance(limiter, str) or not limiter:
                raise ConfigError(f"limiter must be a limiter's name, got {limiter!r}")
            _no_clashes(
                f"limiter {limiter!r} is a named limiter: its limits, algorithm and shadow "
                "settings are its definition's",
                limit=limit,
                algorithm=algorithm,
                shadow=shadow,
                shadow_limits=shadow_limits,
            )
            scope = scope or limiter
        elif isinstance(limit, str | Limit | list | tuple):
            self.static = to_limits(limit)  # bad rates raise ConfigError now, not per request
        elif limit is None:
            raise ConfigError("a rule needs a limit or limiter='name'")
        elif not callable(limit):
            raise ConfigError(f"limit must be a rate string, Limit(s) or a callable, got {limit!r}")
        if shadow is not None and not isinstance(shadow, bool):
            raise ConfigError(f"shadow must be True or False, got {shadow!r}")
        self.shadow = shadow
        self.shadow_limits = (
            None if shadow_limits is None else to_limits(shadow_limits)  # type: ignore[arg-type]
        )
        self.limiter = limiter
        if key is not None and not callable(key):
            raise ConfigError(f"key must be a callable, got {key!r}")
        if not callable(cost) and (
            isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < math.inf
        ):
            raise ConfigError(f"cost must be a number >= 0 or a callable, got {cost!r}")
        if not isinstance(scope, str) or not scope:
            raise ConfigError(f"scope must be a non-empty string, got {scope!r}")
        self.limit = limit
        self.scope = scope
        self.key = key
        self.cost = cost
        self.methods = method_set(methods)
        self.paths = path_matchers(paths)
        self.algorithm = algorithm

    def applies(self, view: RequestView) -> bool:
        """True when the request matches the rule's methods and paths (none given: all)."""
        if self.methods is not None and view.method.upper() not in self.methods:
            return False
        return not self.paths or any(match(view.path) for match in self.paths)

    def __repr__(self) -> str:
        if self.chain is not None:
            return f"LimitRule(limiter={self.chain!r}, keys={self.keys!r}, scope={self.scope!r})"
        if self.limiter is not None:
            return f"LimitRule(limiter={self.limiter!r}, scope={self.scope!r})"
        limit = "; ".join(map(str, self.static)) if self.static else repr(self.limit)
        return f"LimitRule({limit!r}, scope={self.scope!r})"


def _no_clashes(what: str, **options: object) -> None:
    """A `ConfigError` naming the ``options`` given beside a limiter that defines them itself."""
    clashes = [name for name, value in options.items() if value is not None]
    if clashes:
        raise ConfigError(f"{what}; drop {', '.join(clashes)} (or configure them on the limiter)")


def level_keys(
    keys: Sequence[LevelKey] | None, levels: int
) -> tuple[KeyTemplate | KeySpec, ...] | None:
    """A chain rule's keys, one per level: strings parsed as `KeyTemplate`\\ s, key functions
    as they are (None: every level keyed by the rule's key)."""
    if keys is None:
        return None
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise ConfigError(f"keys must be a list of one key per level, got {keys!r}")
    if len(keys) != levels:
        raise ConfigError(f"this chain has {levels} levels: give one key per level, got {keys!r}")
    parsed: list[KeyTemplate | KeySpec] = []
    for key in keys:
        if isinstance(key, str):
            parsed.append(KeyTemplate(key))
        elif callable(key):
            parsed.append(key)
        else:
            raise ConfigError(f"a level's key must be a template or a key function, got {key!r}")
    return tuple(parsed)


def chain_shadow(chain: ChainCore) -> bool:
    """A chain is in shadow mode when every level is (some but not all: `ConfigError`, since a
    shadow level that denies would still block the others)."""
    shadows = {bool(level.shadow) for level in chain.limiters}
    if len(shadows) > 1:
        raise ConfigError(
            f"{chain!r}: its levels must all be in shadow mode or none (a shadow level's denial "
            "would still block the chain)"
        )
    return shadows.pop()


class Outcome:
    """The result of checking a request: ``decision`` is the one to report in headers (the
    denial, else the allowed decision with least remaining; None when no rule applied or every
    store was unreachable), ``allowed`` whether the request may go on, ``rule`` the rule of
    ``decision``, ``decisions`` every decision taken, by scope. (A plain slotted class: one is
    built per request.)"""

    __slots__ = ("allowed", "decision", "decisions", "rule")

    def __init__(
        self,
        allowed: bool = True,
        decision: Decision | None = None,
        rule: LimitRule | None = None,
        decisions: dict[str, Decision] | None = None,
    ) -> None:
        self.allowed = allowed
        self.decision = decision
        self.rule = rule
        self.decisions: dict[str, Decision] = {} if decisions is None else decisions

    def __repr__(self) -> str:
        return f"Outcome(allowed={self.allowed}, decision={self.decision!r}, rule={self.rule!r})"


def denial_body(decision: Decision) -> dict[str, Any]:
    """The default JSON body of a 429."""
    retry = None if decision.retry_after == math.inf else math.ceil(round(decision.retry_after, 6))
    message = f"Rate limit exceeded: {decision.policy}."
    message += " This request can never pass." if retry is None else f" Retry in {retry}s."
    return {
        "error": "rate_limit_exceeded",
        "message": message,
        "limit": decision.limit,
        "policy": decision.policy.name,
        "retry_after": retry,
    }


@dataclass(frozen=True, slots=True)
class Denial:
    """The default response to a denied request, for an adapter to turn into its framework's
    response: the JSON body of :func:`denial_body`, the rate-limit headers, 429."""

    body: bytes
    headers: dict[str, str]
    status: int = DENIED_STATUS
    content_type: str = JSON

    @classmethod
    def of(cls, decision: Decision, headers: dict[str, str]) -> Denial:
        return cls(json.dumps(denial_body(decision)).encode(), headers)
