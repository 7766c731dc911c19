"""FastAPI: a dependency, a route decorator, an exception handler, and the ASGI middleware.

.. code-block:: python

    limiter = Limiter(key=api_key())            # Engine options: store=, trusted_proxies=, ...
    limiter.init_app(app)                       # 429 handler (+ middleware for default limits)

    @app.get("/search")
    @limiter.limit("10/minute", cost=2)
    async def search(q: str): ...

    @app.get("/items", dependencies=[Depends(RateLimit("100/minute"))])
    async def items(): ...

    @app.get("/api", dependencies=[Depends(RateLimit(limiter="api"))])  # a registry limiter
    async def api(): ...

A route with its own limits (``@limiter.limit`` or a :class:`RateLimit` dependency) is limited by
them instead of the default limits (as in flask-limiter).

A denial raises :class:`RateLimited` (a `RateLimitExceeded` that is also an ``HTTPException``), so
it is a 429 with headers even without the handler; with :func:`rate_limit_exceeded_handler` it has
the JSON body and honours ``on_denied``. Allowed responses get the headers too.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, Unpack, cast

from fastapi import FastAPI, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response as StarletteResponse
from starlette.routing import Match

from ratekeeper.decision import Decision
from ratekeeper.errors import RateLimitExceeded
from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import LimitSpec
from ratekeeper.integrations.rules import (
    RULE_OPTIONS,
    Denial,
    LimitRule,
    RuleOptions,
    denial_body,
)
from ratekeeper.integrations.starlette import HEADERS_SCOPE_KEY, RateLimitMiddleware, view_of
from ratekeeper.policies.chain import ChainCore

__all__ = [
    "Limiter",
    "RateLimit",
    "RateLimitMiddleware",
    "RateLimited",
    "rate_limit_exceeded_handler",
]

F = TypeVar("F", bound=Callable[..., Any])
_REQUEST = "ratekeeper_request__"
_RESPONSE = "ratekeeper_response__"


class RateLimited(RateLimitExceeded, HTTPException):
    """A denial inside FastAPI: ``decision``, the ``headers`` to send, and the ``engine``."""

    def __init__(self, decision: Decision, engine: Engine | None = None) -> None:
        RateLimitExceeded.__init__(self, decision)
        headers = engine.response_headers(decision) if engine else decision.headers()
        HTTPException.__init__(self, 429, denial_body(decision)["message"], headers)
        self.engine = engine


async def rate_limit_exceeded_handler(request: Request, exc: Exception) -> Response:
    """Turn any `RateLimitExceeded` (ours, or one raised by ``limiter.enforce()`` in a view) into a
    429 with the rate-limit headers and a JSON body; ``on_denied`` may give the response."""
    if not isinstance(exc, RateLimitExceeded):  # pragma: no cover - registered for it only
        raise exc
    engine: Engine | None = getattr(exc, "engine", None)
    if engine is None:
        return _respond(Denial.of(exc.decision, exc.decision.headers()))
    return await engine.deny_async(request, exc.decision, _respond)


def _respond(denial: Denial) -> StarletteResponse:
    return StarletteResponse(
        denial.body, denial.status, denial.headers, media_type=denial.content_type
    )


async def _check(engine: Engine, rule: LimitRule, request: Request) -> dict[str, str]:
    """Check one rule for a request; raise `RateLimited` on denial; return the headers."""
    if not engine.enabled:
        return {}
    outcome = await engine.check_async(view_of(request.scope, request), [rule])
    if not outcome.allowed:
        assert outcome.decision is not None
        raise RateLimited(outcome.decision, engine)
    headers = engine.response_headers(outcome.decision)
    if headers:
        request.scope.setdefault(HEADERS_SCOPE_KEY, {}).update(headers)
    return headers


class RateLimit:
    """A dependency: ``Depends(RateLimit("10/minute", key=..., cost=...))``, or
    ``Depends(RateLimit(limiter="api"))`` for the registry limiter named ``"api"`` (an unknown
    name is a `ConfigError` here, at import time).

    ``Depends(RateLimit(limiter=chain, keys=["global", "user:{user}"]))`` for a `Chain` /
    `AsyncChain` (one key per level, see `LimitRule`).

    Without ``scope``, each route it guards has its own budget (so one instance can guard a whole
    router), but a named limiter or a chain is one budget; give ``scope="name"`` to share one
    budget between routes. ``limiter=`` given a `Limiter` (or ``engine=`` an `Engine`) reuses its
    engine (store, key, options); otherwise the keywords other than the `RuleOptions` (``key``,
    ``keys``, ``cost``, ``scope``, ``methods``, ``algorithm``, ``shadow``, ``shadow_limits``)
    configure a private one.
    """

    def __init__(
        self,
        limit: LimitSpec | None = None,
        *,
        limiter: "str | ChainCore | Limiter | None" = None,
        engine: Engine | None = None,
        **options: Any,
    ) -> None:
        picked = {name: options.pop(name) for name in RULE_OPTIONS & options.keys()}
        rule = cast(RuleOptions, picked)
        if isinstance(limiter, str | ChainCore):
            rule["limiter"] = limiter
        elif limiter is not None:
            engine = limiter.engine
        if engine is not None and options:
            raise TypeError("pass either a Limiter or engine= or engine options, not several")
        self.engine = engine if engine is not None else Engine(**options)
        scope = rule.pop("scope", None)
        self._make = functools.partial(self.engine.rule, limit, **rule)
        # A named limiter or a chain is one budget wherever it is used (its own default scope).
        shared = bool(scope) or "limiter" in rule
        template = self._make(scope=scope or (None if shared else "route"))  # fails at import
        self._fixed = template if shared else None
        self._rules: dict[str, LimitRule] = {}

    def _rule(self, request: Request) -> LimitRule:
        if self._fixed is not None:
            return self._fixed
        route = request.scope.get("route")
        name = f"route:{request.method} {getattr(route, 'path', '?')}"
        rule = self._rules.get(name)
        if rule is None:
            rule = self._rules[name] = self._make(scope=name)
        return rule

    async def __call__(self, request: Request, response: Response) -> None:
        headers = await _check(self.engine, self._rule(request), request)
        response.headers.update(headers)


def _has_own_limits(app: FastAPI, scope: Any) -> bool:
    """Whether the route ``scope`` is for has its own limits (decorator or `RateLimit`
    dependency): then the default limits do not apply to it."""
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _limited(route)
    return False


def _limited(route: Any) -> bool:
    if hasattr(getattr(route, "endpoint", None), "__ratekeeper_rule__"):
        return True
    dependant = getattr(route, "dependant", None)
    return any(isinstance(dep.call, RateLimit) for dep in getattr(dependant, "dependencies", ()))


class Limiter:
    """Rate limits for a FastAPI app: ``@limiter.limit(...)`` per route, ``default_limits`` for
    every request (through :class:`RateLimitMiddleware`), ``limiter.dependency(...)``.

    Every keyword is an :class:`Engine` option (``key``, ``cost``, ``store``, ``trusted_proxies``,
    ``exempt_paths``, ``headers``, ``on_denied``, ``on_store_error``, ``limiter`` (a registry
    limiter's name for the default limits), ``shadow``, ``observers``, ``registry``…), or pass
    a ready ``engine`` (shared with other code, e.g. ``ratekeeper.compat.fastlimit``).
    """

    def __init__(
        self,
        default_limits: LimitSpec | None = None,
        *,
        engine: Engine | None = None,
        **options: Any,
    ) -> None:
        if engine is not None and (default_limits is not None or options):
            raise TypeError("pass either engine= or default limits and options, not both")
        self.engine = engine if engine is not None else Engine(default_limits, **options)

    def init_app(self, app: FastAPI) -> None:
        """Register the 429 handler, and the middleware (for default limits and headers)."""
        app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)
        app.add_middleware(
            RateLimitMiddleware,  # type: ignore[arg-type]
            engine=self.engine,
            skip=functools.partial(_has_own_limits, app),
        )

    def dependency(self, limit: LimitSpec | None = None, **options: Any) -> RateLimit:
        """``Depends(limiter.dependency("10/minute"))``: a `RateLimit` on this limiter's engine
        (``limiter.dependency(limiter="api")`` for a registry limiter)."""
        return RateLimit(limit, engine=self.engine, **options)

    def limit(
        self, limit: LimitSpec | None = None, **options: Unpack[RuleOptions]
    ) -> Callable[[F], F]:
        """Decorate a route (below ``@app.get``). The view needs no ``request`` parameter; sync
        views still run in the thread pool. ``options`` are the `RuleOptions` (``scope`` shares
        a budget between routes; ``limiter="api"`` uses a registry limiter instead of
        ``limit``)."""

        def decorate(func: F) -> F:
            rule = self.engine.rule(limit, target=func, **options)
            signature = inspect.signature(func)
            own_request = next(
                (
                    name
                    for name, param in signature.parameters.items()
                    if param.annotation in (Request, "Request")
                ),
                None,
            )
            params = list(signature.parameters.values())
            at = next(
                (i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD),
                len(params),
            )
            keyword = inspect.Parameter.KEYWORD_ONLY
            params.insert(at, inspect.Parameter(_RESPONSE, keyword, annotation=Response))
            if own_request is None:
                params.insert(at, inspect.Parameter(_REQUEST, keyword, annotation=Request))
            is_async = inspect.iscoroutinefunction(func)
            engine = self.engine

            @functools.wraps(func)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                request: Request = (
                    kwargs.pop(_REQUEST) if own_request is None else kwargs[own_request]
                )
                response: Response = kwargs.pop(_RESPONSE)
                headers = await _check(engine, rule, request)
                response.headers.update(headers)
                if is_async:
                    result = await func(*args, **kwargs)
                else:
                    result = await run_in_threadpool(func, *args, **kwargs)
                if headers and isinstance(result, StarletteResponse):
                    for name, value in headers.items():
                        result.headers.setdefault(name, value)
                return result

            wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
            wrapper.__ratekeeper_rule__ = rule  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate
