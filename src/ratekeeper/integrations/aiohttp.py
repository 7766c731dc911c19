"""aiohttp: a middleware for app-wide limits and a handler decorator.

.. code-block:: python

    limiter = Limiter(default_limits="100/minute", trusted_proxies=["10.0.0.0/8"])
    app = web.Application(middlewares=[limiter.middleware])

    @routes.get("/search")
    @limiter.limit("10/minute", cost=2)
    async def search(request): ...

A handler with ``@limiter.limit`` is limited by its own limits instead of the default limits (as
in flask-limiter); ``@limiter.exempt`` removes a handler from the default limits.
Denials are JSON 429s (or ``on_denied``'s response); limited responses carry the rate-limit
headers. ``request["user"]`` (if an auth middleware sets it) is the user for the ``user()`` key.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, Unpack

from aiohttp import web

from ratekeeper.decision import Decision
from ratekeeper.errors import RateLimitExceeded
from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import LimitSpec, RequestView
from ratekeeper.integrations.rules import Denial, LimitRule, Outcome, RuleOptions

__all__ = ["Limiter", "view_of"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])
_EXEMPT = "__ratekeeper_exempt__"
_LIMITED = "__ratekeeper_limited__"  # set on @limit handlers: their limits replace the defaults


def view_of(request: web.Request) -> RequestView:
    """The neutral view of an aiohttp request."""
    return _RequestView(request)


class _RequestView(RequestView):
    """A :class:`RequestView` read from the aiohttp request as needed (headers, route and user
    only when asked)."""

    __slots__ = ()

    def __init__(self, request: web.Request) -> None:
        self.method = request.method
        self.path = request.path
        self.client = request.remote
        self._native = request
        self._make_native = None

    def get_header(self, name: str) -> str | None:
        return ", ".join(self._native.headers.getall(name, ())) or None

    def get_user(self) -> Any:
        return self._native.get("user")

    @property
    def route(self) -> str | None:  # type: ignore[override]
        resource = self._native.match_info.route.resource
        return resource.canonical if resource is not None else None


class Limiter:
    """Limits for an aiohttp app. ``default_limits`` apply (through :attr:`middleware`) to
    every request that is not exempt; every other keyword is an :class:`Engine` option (``key``,
    ``cost``, ``store``, ``trusted_proxies``, ``exempt_paths``, ``headers``, ``on_denied``,
    ``on_store_error`` (default ``"allow"``), ``limiter`` (a registry limiter's name for the
    default limits), ``shadow``, ``observers``, ``registry``…)."""

    def __init__(self, default_limits: LimitSpec | None = None, **options: Any) -> None:
        if callable(options.get("on_denied")):
            options["on_denied"] = _responses_only(options["on_denied"])
        self.engine = Engine(default_limits, **options)
        self.middleware = self._make_middleware()

    def setup(self, app: web.Application) -> None:
        """Add :attr:`middleware` to ``app`` (or pass it in ``middlewares=``), and close the
        stores built from a URL on cleanup."""
        app.middlewares.append(self.middleware)
        app.on_cleanup.append(self._cleanup)

    async def _cleanup(self, app: web.Application) -> None:
        await self.engine.aclose()

    async def _denial(self, request: web.Request, decision: Decision) -> web.StreamResponse:
        return await self.engine.deny_async(request, decision, _respond)

    def _headers(self, outcome: Outcome, response: web.StreamResponse) -> web.StreamResponse:
        if not response.prepared:
            for name, value in self.engine.response_headers(outcome.decision).items():
                response.headers.setdefault(name, value)
        return response

    async def _run(
        self, request: web.Request, rules: list[LimitRule] | None, handler: Handler
    ) -> web.StreamResponse:
        view = view_of(request)
        if self.engine.is_exempt(view):
            return await handler(request)
        outcome = self.engine.check_now(view, rules)
        if outcome is None:
            outcome = await self.engine.check_async(view, rules)
        if not outcome.allowed:
            assert outcome.decision is not None
            return await self._denial(request, outcome.decision)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # raised responses (redirects, 404s) get headers too
            self._headers(outcome, exc)
            raise
        return self._headers(outcome, response)

    def _make_middleware(self) -> Any:
        @web.middleware
        async def ratekeeper_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            target = getattr(request.match_info, "handler", None)
            if (
                not self.engine.rules
                or getattr(target, _EXEMPT, False)
                or getattr(target, _LIMITED, False)
            ):
                return await self._handle_exceeded(request, handler)
            return await self._run(
                request, None, functools.partial(self._handle_exceeded, handler=handler)
            )

        return ratekeeper_middleware

    async def _handle_exceeded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A `RateLimitExceeded` raised by a handler (``limiter.enforce(key)``) is a 429."""
        try:
            return await handler(request)
        except RateLimitExceeded as exc:
            return await self._denial(request, exc.decision)

    def limit(
        self, limit: LimitSpec | None = None, **options: Unpack[RuleOptions]
    ) -> Callable[[H], H]:
        """Limit a handler (a coroutine ``handler(request)``) by these limits instead of the
        default limits. ``options`` are the `RuleOptions` (``scope`` names a budget shared with
        other handlers; ``limiter="api"`` uses a registry limiter instead of ``limit``)."""

        def decorate(handler: H) -> H:
            rule = self.engine.rule(limit, target=handler, **options)

            @functools.wraps(handler)
            async def limited(request: web.Request) -> web.StreamResponse:
                return await self._run(request, [rule], handler)

            setattr(limited, _LIMITED, True)
            return limited  # type: ignore[return-value]

        return decorate

    def exempt(self, handler: H) -> H:
        """Exempt a handler from the default limits."""
        setattr(handler, _EXEMPT, True)
        return handler


def _responses_only(hook: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``on_denied`` for aiohttp: whatever it returns that is not a response means the default."""

    @functools.wraps(hook)
    async def on_denied(request: web.Request, decision: Decision) -> web.StreamResponse | None:
        result = hook(request, decision)
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, web.StreamResponse) else None

    return on_denied


def _respond(denial: Denial) -> web.Response:
    return web.Response(
        body=denial.body,
        status=denial.status,
        headers=denial.headers,
        content_type=denial.content_type,
    )
