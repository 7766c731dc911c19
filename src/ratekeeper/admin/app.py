"""`create_admin_app`: the admin API, the live dashboard and the decision service, as one ASGI
app (Starlette, the ``admin`` extra) to mount in any ASGI application or run alone
(``ratekeeper serve``).

Every request needs the token (`AdminApp` checks it before any routing, so even a 404 needs it):
``Authorization: Bearer <token>``, or HTTP Basic with the token as password (what a browser
sends for the dashboard after its login prompt), compared in constant time. Requests a browser
marks as coming from another site (``Sec-Fetch-Site: cross-site`` or ``same-site``) are refused,
so a page elsewhere cannot ride on the browser's remembered credentials; no CORS headers are
ever sent. Routes (JSON in and out, errors as ``{"error": "..."}`` naming the problem)::

    GET    /limiters                    every limiter: settings, metrics, stored-rule version
    GET    /limiters/{name}             one limiter (404 when unknown)
    PUT    /limiters/{name}             create (201) or replace (200) it; body: limiter fields
    DELETE /limiters/{name}
    GET    /limiters/{name}/keys/{key}  the key's state as peek sees it (?cost=N), consuming nothing
    DELETE /limiters/{name}/keys/{key}  reset the key
    GET    /metrics                     Prometheus text (the app's own PrometheusObserver)
    GET    /stats                       what the dashboard draws (see `DashboardStats`)
    GET    /                            the dashboard; /assets/dashboard.js and .css
    POST   /v1/check, /v1/check/batch   the decision service (see `ratekeeper.admin.service`)

Limiters changed through ``PUT``/``DELETE`` are kept in their store when it is shared, and every
process running a `RuleSync` (this app starts one) picks the change up within about a second
(see `ratekeeper.admin.rules`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Final

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ratekeeper.admin.http import (
    SECURITY_HEADERS,
    Problem,
    check_cost,
    check_key,
    check_name,
    decision_json,
    json_response,
    read_json,
)
from ratekeeper.admin.rules import POLL_INTERVAL, RuleSync
from ratekeeper.admin.service import DecisionService, Limiters
from ratekeeper.admin.stats import SERIES_SECONDS, DashboardStats
from ratekeeper.config import Where, limiter_definition, limiter_fields, suggest
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.registry import Registry, default_registry

__all__ = ["MIN_TOKEN_LENGTH", "AdminApp", "create_admin_app"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

MIN_TOKEN_LENGTH: Final = 16
REALM: Final = "ratekeeper admin"
# Fields a limiter may be given over HTTP: those with plain JSON values (no clock, no observers).
NOT_OVER_HTTP: Final = frozenset({"clock", "observers"})
JSON_SCALARS: Final = (str, int, float, bool, type(None))
ASSETS: Final = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
DASHBOARD_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ALLOWED_FETCH_SITES: Final = (b"same-origin", b"none")


def _asset(name: str) -> bytes:
    return resources.files("ratekeeper.admin").joinpath("static", name).read_bytes()


class AdminApp:
    """The ASGI app `create_admin_app` returns: the token check in front of the routes.

    ``registry``, ``stats`` (the dashboard's observer), ``rules`` (the `RuleSync`) and
    ``prometheus`` (the collector registry ``/metrics`` serves) are there to use; `close` stops
    the rules thread (also done at lifespan shutdown when the app runs alone).
    """

    def __init__(
        self,
        app: Starlette,
        token: str,
        registry: Registry,
        stats: DashboardStats,
        rules: RuleSync,
        prometheus: Any,
    ) -> None:
        self.app = app
        self._token = token.encode()
        self.registry = registry
        self.stats = stats
        self.rules = rules
        self.prometheus = prometheus

    def close(self) -> None:
        self.rules.close()

    def authorized(self, header: bytes | None) -> bool:
        """Whether an ``Authorization`` value carries the token (constant-time compare)."""
        if not header:
            return False
        scheme, _, value = header.strip().partition(b" ")
        scheme = scheme.lower()
        given = value.strip()
        if scheme == b"basic":
            try:
                given = base64.b64decode(given, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        elif scheme != b"bearer":
            return False
        return hmac.compare_digest(given, self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            site = headers.get(b"sec-fetch-site")
            problem = None
            if site is not None and site.lower() not in ALLOWED_FETCH_SITES:
                problem = Problem(403, "requests from another site are refused")
            elif not self.authorized(headers.get(b"authorization")):
                path = scope.get("path", "")
                challenge = (
                    f'Basic realm="{REALM}", charset="UTF-8"'
                    if path.endswith("/") or path.rsplit("/", 2)[-2:-1] == ["assets"]
                    else f'Bearer realm="{REALM}"'
                )
                problem = Problem(
                    401,
                    "missing or wrong token: send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": challenge},
                )
            if problem is not None:
                response = json_response(
                    {"error": problem.message}, problem.status, problem.headers
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Handlers:
    """The admin routes."""

    def __init__(
        self,
        registry: Registry,
        limiters: Limiters,
        rules: RuleSync,
        stats: DashboardStats,
        prometheus: Any,
    ) -> None:
        self.registry = registry
        self.limiters = limiters
        self.rules = rules
        self.stats = stats
        self.prometheus = prometheus
        self.fields = tuple(sorted(limiter_fields() - NOT_OVER_HTTP))

    def _limiter(self, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "settings": settings,
            "metrics": self.registry.metrics(name).as_dict(),
            "shared": self.rules.shared(str(settings["store"])),
            "version": self.rules.version(name),
        }

    def _settings(self, name: str) -> dict[str, Any]:
        settings = self.registry.list_limiters().get(check_name(name))
        if settings is None:
            known = ", ".join(map(repr, self.registry.list_limiters())) or "none"
            raise Problem(404, f"unknown limiter {name!r}; known limiters: {known}")
        return settings

    async def list(self, request: Request) -> Response:
        limiters = self.registry.list_limiters()
        return json_response(
            {"limiters": [self._limiter(name, settings) for name, settings in limiters.items()]}
        )

    async def get(self, request: Request) -> Response:
        name = request.path_params["name"]
        return json_response(self._limiter(name, self._settings(name)))

    async def put(self, request: Request) -> Response:
        name = check_name(request.path_params["name"])
        body = await read_json(request)
        fields = self._fields(name, body)
        existed = name in self.registry.list_limiters()
        try:
            await run_in_threadpool(self.rules.put, name, fields)
        except StoreUnavailable as exc:
            raise Problem(503, f"limiter {name!r} not changed: {exc}") from None
        except ConfigError as exc:
            raise Problem(422, str(exc)) from None
        return json_response(self._limiter(name, self._settings(name)), 200 if existed else 201)

    def _fields(self, name: str, body: object) -> dict[str, Any]:
        """The body, checked as `configure_limiter` would (all before anything changes)."""
        if not isinstance(body, dict):
            raise Problem(422, f"the body must be a JSON object of limiter fields, got {body!r}")
        for field, value in body.items():
            if field not in self.fields:
                raise Problem(
                    422,
                    f"PUT /limiters/{name}: unknown field {field!r}{suggest(field, self.fields)}",
                )
            ok = isinstance(value, JSON_SCALARS) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            )
            if not ok:
                raise Problem(422, f"field {field!r} must be a plain value, got {value!r}")
        try:
            definition = limiter_definition(name, body, self._where(name))
        except ConfigError as exc:
            raise Problem(422, str(exc)) from None
        stores = self.registry.list_stores()
        if definition.store not in stores:
            known = ", ".join(map(repr, stores))
            raise Problem(422, f"unknown store {definition.store!r}; known stores: {known}")
        return dict(body)

    @staticmethod
    def _where(name: str) -> Where:
        return Where(f"PUT /limiters/{name}", f"limiters.{name}")

    async def delete(self, request: Request) -> Response:
        name = request.path_params["name"]
        self._settings(name)
        try:
            version = await run_in_threadpool(self.rules.delete, name)
        except StoreUnavailable as exc:
            raise Problem(503, f"limiter {name!r} not deleted: {exc}") from None
        return json_response({"deleted": name, "version": version})

    async def peek(self, request: Request) -> Response:
        name, key = self._name_key(request)
        cost = request.query_params.get("cost", "1")
        try:
            number = float(cost)
        except ValueError:
            raise Problem(422, f"cost must be a number, got {cost!r}") from None
        decision = await self.limiters.call(name, "peek", key, check_cost(number))
        return json_response({"limiter": name, "key": key, **decision_json(decision)})

    async def reset(self, request: Request) -> Response:
        name, key = self._name_key(request)
        await self.limiters.call(name, "reset", key)
        return json_response({"limiter": name, "key": key, "reset": True})

    def _name_key(self, request: Request) -> tuple[str, str]:
        name = request.path_params["name"]
        self._settings(name)
        return name, check_key(request.path_params["key"])

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(
            generate_latest(self.prometheus),
            headers={**SECURITY_HEADERS, "Content-Type": CONTENT_TYPE_LATEST},
        )

    async def stats_(self, request: Request) -> Response:
        raw = request.query_params.get("seconds", str(SERIES_SECONDS))
        if not raw.isdigit():
            raise Problem(422, f"seconds must be a whole number, got {raw!r}")
        return json_response(self.stats.snapshot(int(raw)))

    async def dashboard(self, request: Request) -> Response:
        return Response(
            _asset("dashboard.html"),
            media_type="text/html; charset=utf-8",
            headers={**SECURITY_HEADERS, "Content-Security-Policy": DASHBOARD_CSP},
        )

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise Problem(404, f"no asset {name!r}")
        return Response(_asset(name), media_type=ASSETS[name], headers=SECURITY_HEADERS)


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return json_response({"error": exc.message}, exc.status, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {
        404: f"no route {request.url.path!r}",
        405: f"method {request.method} is not allowed on {request.url.path!r}",
    }.get(exc.status_code, str(exc.detail))
    return json_response({"error": message}, exc.status_code, exc.headers)


def create_admin_app(
    registry: Registry | None = None,
    *,
    token: str,
    hash_keys: bool = False,
    key_secret: bytes | str | None = None,
    poll_interval: float = POLL_INTERVAL,
) -> AdminApp:
    """The admin app for ``registry`` (default: ratekeeper's default registry).

    ``token`` is required (at least `MIN_TOKEN_LENGTH` characters): there is no open admin.
    ``hash_keys`` shows the HMAC-SHA256 digest of denied keys on the dashboard instead of the
    keys (``key_secret``: the secret, e.g. your `AuditLog`'s, to compare digests).
    The app attaches two observers to the registry (the dashboard's `DashboardStats` and a
    `PrometheusObserver` on a collector registry of its own, served at ``/metrics``) and starts
    a `RuleSync` (stored rules applied now, then polled every ``poll_interval`` seconds).
    """
    if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"create_admin_app needs a token of at least {MIN_TOKEN_LENGTH} characters "
            "(e.g. secrets.token_urlsafe()); there is no admin app without one"
        )
    from prometheus_client import CollectorRegistry

    from ratekeeper.observability import PrometheusObserver

    registry = default_registry if registry is None else registry
    stats = DashboardStats(hash_keys=hash_keys, secret=key_secret)
    prometheus = CollectorRegistry(auto_describe=True)
    registry.observe(stats)
    registry.observe(PrometheusObserver(registry=prometheus))
    rules = RuleSync(registry, interval=poll_interval).start()
    limiters = Limiters(registry)
    handlers = _Handlers(registry, limiters, rules, stats, prometheus)
    service = DecisionService(limiters)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        rules.close()

    routes = [
        Route("/", handlers.dashboard, methods=["GET"]),
        Route("/assets/{name}", handlers.asset, methods=["GET"]),
        Route("/limiters", handlers.list, methods=["GET"]),
        Route("/limiters/{name}", handlers.get, methods=["GET"]),
        Route("/limiters/{name}", handlers.put, methods=["PUT"]),
        Route("/limiters/{name}", handlers.delete, methods=["DELETE"]),
        Route("/limiters/{name}/keys/{key:path}", handlers.peek, methods=["GET"]),
        Route("/limiters/{name}/keys/{key:path}", handlers.reset, methods=["DELETE"]),
        Route("/metrics", handlers.metrics, methods=["GET"]),
        Route("/stats", handlers.stats_, methods=["GET"]),
        Route("/v1/check", service.check, methods=["POST"]),
        Route("/v1/check/batch", service.batch, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={Problem: _problem, HTTPException: _http_error},
        lifespan=lifespan,
    )
    return AdminApp(app, token.strip(), registry, stats, rules, prometheus)
