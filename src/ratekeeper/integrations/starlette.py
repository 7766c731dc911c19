"""A pure ASGI rate-limiting middleware: Starlette, FastAPI, Litestar, Quart, any ASGI app.

.. code-block:: python

    app.add_middleware(RateLimitMiddleware, limits="100/minute", exempt_paths=["/health"])

Non-HTTP scopes (websocket, lifespan) pass straight through (at lifespan shutdown, stores built
from a URL are closed). A denied request gets a JSON 429
(or ``on_denied``'s response); allowed responses get the rate-limit headers, added by wrapping
``send``. Only the ASGI protocol is used: Starlette is imported, if installed, just to hand custom
key/cost/limit functions a ``starlette.requests.Request``; otherwise they get the ASGI scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ratekeeper.decision import Decision
from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import LimitSpec, RequestView
from ratekeeper.integrations.rules import Denial, LimitRule, Outcome

__all__ = ["HEADERS_SCOPE_KEY", "LimitRule", "RateLimitMiddleware", "send_denial", "view_of"]

# The ASGI types, spelled as Starlette spells them (so the middleware type-checks there).
Scope = Any
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]

# Route-level limits (FastAPI decorator/dependency) leave their headers here; the middleware
# sends them (they are more specific than its own).
HEADERS_SCOPE_KEY = "ratekeeper.headers"
HEADER_NAMES_CACHED = 256  # distinct response header names kept encoded

try:  # only to give custom functions a friendly request object
    from starlette.requests import Request as _Request
except ImportError:  # pragma: no cover - Litestar or bare ASGI without Starlette
    _Request = None  # type: ignore[assignment,misc]


def view_of(scope: Scope, native: Any = None) -> RequestView:
    """The neutral view of an ASGI HTTP scope."""
    raw_headers: list[tuple[bytes, bytes]] = scope.get("headers") or []

    def get_header(name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        values = [value.decode("latin-1") for key, value in raw_headers if key.lower() == wanted]
        return ", ".join(values) if values else None

    client = scope.get("client")
    route = scope.get("route")
    if native is None:
        native = _Request(scope) if _Request is not None else scope
    return RequestView(
        method=scope.get("method", "GET"),
        path=scope.get("path", "/"),
        get_header=get_header,
        client=client[0] if client else None,
        native=native,
        route=getattr(route, "path", None),
        get_user=lambda: scope.get("user"),
    )


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    names = _HEADER_NAMES
    return [
        (names.get(name) or _header_name(name), value.encode("latin-1"))
        for name, value in headers.items()
    ]


_HEADER_NAMES: dict[str, bytes] = {}  # a plain dict: its lookup costs less than a cache call


def _header_name(name: str) -> bytes:
    """A header name as ASGI sends it: lower case, latin-1 (the same few names every time,
    remembered up to ``HEADER_NAMES_CACHED``)."""
    encoded = name.lower().encode("latin-1")
    if len(_HEADER_NAMES) < HEADER_NAMES_CACHED:
        _HEADER_NAMES[name] = encoded
    return encoded


async def send_denial(
    engine: Engine, decision: Decision, native: Any, scope: Scope, receive: Receive, send: Send
) -> None:
    """Send the 429 for ``decision``: ``on_denied``'s response if it gives one (any ASGI
    response object), else the JSON body with the rate-limit headers."""
    response = await engine.deny_async(native, decision, _DenialApp)
    await response(scope, receive, send)


class _DenialApp:
    """A :class:`Denial` as an ASGI response."""

    def __init__(self, denial: Denial) -> None:
        self.denial = denial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.denial.body
        headers = [
            (b"content-type", self.denial.content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
            *_encode(self.denial.headers),
        ]
        await send(
            {"type": "http.response.start", "status": self.denial.status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})


class RateLimitMiddleware:
    """Rate limit every HTTP request of an ASGI app.

    ``limits``: the app-wide limit (rate string, `Limit`(s), or a callable of the request, sync or
    async, returning one, e.g. by tenant tier); ``rules``: more `LimitRule`\\ s (per path, per
    method, shared budgets by ``scope``); every other keyword is an :class:`Engine` option
    (``key``, ``cost``, ``store``, ``trusted_proxies``, ``exempt_paths``, ``headers``,
    ``on_denied``, ``on_store_error`` (default ``"allow"``), ``limiter`` (a registry limiter's
    name, or an `AsyncChain` with ``keys`` per level, instead of ``limits``), ``shadow``,
    ``observers``, ``registry``…). Or pass a ready ``engine``.
    ``skip(scope)``, when given, names the requests the engine's rules are not checked for
    (routes with their own limits); they still get the route-level headers.
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: LimitSpec | None = None,
        *,
        engine: Engine | None = None,
        skip: Callable[[Scope], bool] | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.skip = skip
        if engine is not None and (limits is not None or options):
            raise TypeError("pass either engine= or limits and options, not both")
        self.engine = engine if engine is not None else Engine(limits, **options)

    def _closing(self, send: Send) -> Send:
        """Close the stores built from a URL when the app reports its shutdown complete."""

        async def send_and_close(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.engine.aclose()
            await send(message)

        return send_and_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        engine = self.engine
        view = view_of(scope)
        if (
            not engine.rules
            or engine.is_exempt(view)
            or (self.skip is not None and self.skip(scope))
        ):
            outcome = Outcome()
        else:
            outcome = await engine.check_async(view)
        if not outcome.allowed:
            assert outcome.decision is not None
            await send_denial(engine, outcome.decision, view.native, scope, receive, send)
            return
        own = _encode(engine.response_headers(outcome.decision))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, scope.get(HEADERS_SCOPE_KEY), own)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_headers(
    message: Message, route: dict[str, str] | None, own: list[tuple[bytes, bytes]]
) -> None:
    """Add the rate-limit headers to a response start: a route-level limit's (``route``, more
    specific) before the middleware's ``own``; none that the response already has."""
    extra = _encode(route) if route else []
    if extra:
        names = {name for name, _ in extra}
        extra += [(name, value) for name, value in own if name not in names]
    else:
        extra = own
    if not extra:
        return
    headers = message.get("headers", ())
    present = {key.lower() for key, _ in headers}
    message["headers"] = [*headers, *(item for item in extra if item[0] not in present)]
