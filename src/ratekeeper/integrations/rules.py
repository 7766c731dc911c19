"""Rules: which requests a limit applies to (methods, paths), with which key, cost and budget
(scope); the outcome of checking a request; the default 429 body."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError
from ratekeeper.integrations.keys import CostSpec, KeySpec, LimitSpec, RequestView
from ratekeeper.limits import Limit, to_limits

HeaderGroup = Literal["ratelimit", "x-ratelimit", "retry-after"]
HEADER_GROUPS: frozenset[str] = frozenset({"ratelimit", "x-ratelimit", "retry-after"})
_GROUP_OF = {
    "RateLimit": "ratelimit",
    "RateLimit-Policy": "ratelimit",
    "X-RateLimit-Limit": "x-ratelimit",
    "X-RateLimit-Remaining": "x-ratelimit",
    "X-RateLimit-Reset": "x-ratelimit",
    "Retry-After": "retry-after",
}


def _path_matchers(items: Iterable[str | re.Pattern[str]] | None) -> tuple[Any, ...]:
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


def _methods(items: Iterable[str] | None) -> frozenset[str] | None:
    if items is None:
        return None
    if isinstance(items, str):
        items = [items]
    return frozenset(method.upper() for method in items)


class LimitRule:
    """One limit applied to requests: ``limit`` (a rate string, `Limit`, sequence of limits, or a
    callable of the request returning one of those, or None for "no limit", e.g. by tenant
    tier), ``key`` (key function, engine default when None), ``cost`` (number or callable),
    ``scope`` (the budget's name: rules with the same scope share one budget per key),
    ``methods``/``paths`` (restrict where it applies; paths are prefixes or compiled regexes),
    ``algorithm`` (engine default when None).
    """

    __slots__ = ("algorithm", "cost", "key", "limit", "methods", "paths", "scope", "static")

    def __init__(
        self,
        limit: LimitSpec,
        *,
        scope: str,
        key: KeySpec | None = None,
        cost: CostSpec = 1,
        methods: Iterable[str] | None = None,
        paths: Iterable[str | re.Pattern[str]] | None = None,
        algorithm: str | None = None,
    ) -> None:
        self.static: tuple[Limit, ...] | None = None
        if isinstance(limit, str | Limit | list | tuple):
            self.static = to_limits(limit)  # bad rates raise ConfigError now, not per request
        elif not callable(limit):
            raise ConfigError(f"limit must be a rate string, Limit(s) or a callable, got {limit!r}")
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
        self.methods = _methods(methods)
        self.paths = _path_matchers(paths)
        self.algorithm = algorithm

    def applies(self, view: RequestView) -> bool:
        if self.methods is not None and view.method.upper() not in self.methods:
            return False
        return not self.paths or any(match(view.path) for match in self.paths)

    def __repr__(self) -> str:
        limit = "; ".join(map(str, self.static)) if self.static else repr(self.limit)
        return f"LimitRule({limit!r}, scope={self.scope!r})"


@dataclass(slots=True)
class Outcome:
    """The result of checking a request: ``decision`` is the one to report in headers (the
    denial, else the allowed decision with least remaining; None when no rule applied or every
    store was unreachable), ``allowed`` whether the request may go on, ``decisions`` every
    decision taken, by scope."""

    allowed: bool = True
    decision: Decision | None = None
    rule: LimitRule | None = None
    decisions: dict[str, Decision] = field(default_factory=dict)


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


_FAILED = object()
