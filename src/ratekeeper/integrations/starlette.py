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

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ratekeeper.decision import SECONDS_DIGITS, Decision, policy_text
from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import LimitSpec, RequestView
from ratekeeper.integrations.rules import HEADER_GROUP_OF, Denial, LimitRule
from ratekeeper.limits import Limit

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
POLICIES_CACHED = 1024  # distinct limits whose header parts are kept encoded

try:  # only to give custom functions a friendly request object
    from starlette.requests import Request as _Request
except ImportError:  # pragma: no cover - Litestar or bare ASGI without Starlette
    _Request = None  # type: ignore[assignment,misc]


def view_of(scope: Scope, native: Any = None) -> RequestView:
    """The neutral view of an ASGI HTTP scope (``native``: the framework's request when there
    is one already; else a Starlette ``Request`` is built if a custom function asks for it)."""
    return _ScopeView(scope, native)


class _ScopeView(RequestView):
    """A :class:`RequestView` read from the ASGI scope as needed: building one costs a few
    attribute stores; headers are searched, and the native request built, only when asked."""

    __slots__ = ("scope",)

    def __init__(self, scope: Scope, native: Any = None) -> None:
        self.scope = scope
        self.method = scope.get("method", "GET")
        self.path = scope.get("path", "/")
        client = scope.get("client")
        self.client = client[0] if client else None
        self._native = native
        self._make_native = None
        route = scope.get("route")
        self.route = getattr(route, "path", None) if route is not None else None

    def get_header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        raw: list[tuple[bytes, bytes]] = self.scope.get("headers") or []
        values = [value.decode("latin-1") for key, value in raw if key.lower() == wanted]
        return ", ".join(values) if values else None

    def get_user(self) -> Any:
        return self.scope.get("user")

    @property
    def native(self) -> Any:
        """A Starlette ``Request`` when Starlette is installed, else the scope (built once, and
        only when a custom function asks for it)."""
        if self._native is None:
            self._native = _Request(self.scope) if _Request is not None else self.scope
        return self._native


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


# Per limit (by identity, the limit kept to check it): its RateLimit-Policy value, the start of its
# RateLimit item, and its amount with X-RateLimit-Limit's value, encoded once.
_POLICY_BYTES: dict[int, tuple[Limit, bytes, bytes, int, bytes]] = {}
# Every header name the middleware may send, as ASGI sends them.
OWN_NAMES = frozenset(name.lower().encode("latin-1") for name in HEADER_GROUP_OF)


def header_items(engine: Engine, decision: Decision | None) -> list[tuple[bytes, bytes]]:
    """The engine's rate-limit headers for ``decision`` as ASGI sends them. The common case, an
    allowed single-limit decision with every header group and ``t`` in seconds, is written
    straight into bytes, the parts that depend only on the limit encoded once (the same
    headers, in the same order, as ``engine.response_headers``)."""
    if (
        decision is None
        or not decision.allowed
        or decision.details
        or decision.fallback
        or not engine.standard_headers
        or type(decision.remaining) is not int  # a custom store's odd value: as headers() has it
    ):
        return _encode(engine.response_headers(decision))
    policy = decision.policy
    fixed = _POLICY_BYTES.get(id(policy))
    if fixed is None or fixed[0] is not policy:
        fixed = _policy_bytes(policy)
    remaining = b"%d" % decision.remaining
    # `seconds_to_reset` of an allowed decision, inlined: its reset_after rounded up
    seconds = math.ceil(round(decision.reset_after, SECONDS_DIGITS))
    t = b"%d" % seconds if seconds > 0 else b"0"
    limit = decision.limit
    return [
        (b"ratelimit-policy", fixed[1]),
        (b"ratelimit", b"%s%s;t=%s" % (fixed[2], remaining, t)),
        (b"x-ratelimit-limit", fixed[4] if limit == fixed[3] else str(limit).encode("latin-1")),
        (b"x-ratelimit-remaining", remaining),
        (b"x-ratelimit-reset", t),
    ]


def _policy_bytes(policy: Limit) -> tuple[Limit, bytes, bytes, int, bytes]:
    fixed = (
        policy,
        policy_text(policy).encode("latin-1"),
        f'"{policy.name}";r='.encode("latin-1"),
        policy.amount,
        b"%d" % policy.amount,
    )
    if len(_POLICY_BYTES) >= POLICIES_CACHED:
        _POLICY_BYTES.clear()
    _POLICY_BYTES[id(policy)] = fixed
    return fixed


def _has_own(headers: Any) -> bool:
    """Whether response ``headers`` already have one of the middleware's header names (names
    are lower case in ASGI as a rule: only one that is not is lowered to compare)."""
    for name, _ in headers:
        if name in OWN_NAMES or (not name.islower() and name.lower() in OWN_NAMES):
            return True
    return False


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
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self.app(scope, receive, self._closing(send))
            else:
                await self.app(scope, receive, send)
            return
        engine = self.engine
        view = _ScopeView(scope)
        if (
            not engine.rules
            or engine.is_exempt(view)
            or (self.skip is not None and self.skip(scope))
        ):
            decision = None
        else:
            outcome = engine.check_now(view)
            if outcome is None:
                outcome = await engine.check_async(view)
            if not outcome.allowed:
                assert outcome.decision is not None
                await send_denial(engine, outcome.decision, view.native, scope, receive, send)
                return
            decision = outcome.decision
        own = header_items(engine, decision)

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
    if route:
        extra = _encode(route)
        names = {name for name, _ in extra}
        extra += [(name, value) for name, value in own if name not in names]
    elif own:
        extra = own
    else:
        return
    headers = message.get("headers") or ()
    if headers and _has_own(headers):  # rare: the app set some itself (its own stay)
        present = {key.lower() for key, _ in headers}
        extra = [item for item in extra if item[0] not in present]
    message["headers"] = [*headers, *extra]
