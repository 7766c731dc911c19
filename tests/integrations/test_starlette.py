"""The pure ASGI middleware under a bare Starlette app, driven by httpx's ASGI transport."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ratekeeper import AsyncChain, AsyncRateLimiter, Decision
from ratekeeper.integrations import LimitRule, cost_from_header, header
from ratekeeper.integrations.starlette import RateLimitMiddleware
from ratekeeper.stores.memory import AsyncMemoryStore
from ratekeeper.testing import FakeClock

from .conftest import TIERS, AsyncDownStore, tier_of

PEER = ("203.0.113.7", 50000)


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def hello_sync(request: Request) -> Response:  # Starlette runs it in the thread pool
    return PlainTextResponse("hello sync")


def make_app(**options: Any) -> Starlette:
    routes = [
        Route(p, hello, methods=["GET", "POST"])
        for p in ("/", "/a", "/b", "/health", "/login", "/signup", "/static/x.css")
    ]
    routes.append(Route("/sync", hello_sync))
    app = Starlette(routes=routes)
    app.add_middleware(RateLimitMiddleware, **options)
    return app


def client(app: Any, peer: tuple[str, int] = PEER) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=peer), base_url="http://testserver"
    )


async def test_limit_reached_gives_429_with_headers() -> None:
    clock = FakeClock()
    app = make_app(limits="3/minute", clock=clock)
    async with client(app) as c:
        for remaining in (2, 1, 0):
            r = await c.get("/")
            assert r.status_code == 200 and r.text == "hello"
            assert r.headers["X-RateLimit-Limit"] == "3"
            assert r.headers["X-RateLimit-Remaining"] == str(remaining)
            assert r.headers["RateLimit-Policy"] == '"3-per-60s";q=3;w=60'
            assert r.headers["RateLimit"].startswith(f'"3-per-60s";r={remaining};t=')
            assert "Retry-After" not in r.headers
        r = await c.get("/")
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "20"
        assert r.headers["RateLimit"] == '"3-per-60s";r=0;t=20'
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["error"] == "rate_limit_exceeded" and body["retry_after"] == 20
        clock.advance(20)
        assert (await c.get("/")).status_code == 200


async def test_exempt_paths_and_methods_untouched() -> None:
    app = make_app(
        limits="1/minute",
        clock=FakeClock(),
        exempt_paths=["/health", re.compile(r"^/static/.*\.css$")],
        exempt_methods=["OPTIONS", "HEAD"],
    )
    async with client(app) as c:
        for _ in range(5):
            r = await c.get("/health")
            assert r.status_code == 200 and "RateLimit" not in r.headers
            assert (await c.get("/static/x.css")).status_code == 200
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/")).status_code == 429


async def test_cost_from_header() -> None:
    app = make_app(limits="10/minute", cost=cost_from_header("X-Batch"), clock=FakeClock())
    async with client(app) as c:
        r = await c.get("/", headers={"X-Batch": "7"})
        assert r.headers["X-RateLimit-Remaining"] == "3"
        r = await c.get("/", headers={"X-Batch": "not-a-number"})  # counts as 1, never a 500
        assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "2"
        assert (await c.get("/", headers={"X-Batch": "3"})).status_code == 429


async def test_dynamic_tiers() -> None:
    def limit(request: Request) -> str | None:
        return TIERS[tier_of(request.headers.get("x-api-key"))]

    app = make_app(limits=limit, key=header("X-API-Key"), clock=FakeClock())
    async with client(app) as c:
        codes: dict[str, list[int]] = {}
        for api_key in ("free-1", "pro-1", "enterprise-1"):
            codes[api_key] = [
                (await c.get("/", headers={"X-API-Key": api_key})).status_code for _ in range(7)
            ]
        assert codes["free-1"] == [200] * 2 + [429] * 5
        assert codes["pro-1"] == [200] * 5 + [429] * 2
        assert codes["enterprise-1"] == [200] * 7
        r = await c.get("/", headers={"X-API-Key": "enterprise-1"})
        assert "RateLimit" not in r.headers  # unlimited tier: nothing to report


async def test_shared_budget_between_routes() -> None:
    auth = [
        LimitRule("2/minute", scope="auth", paths=["/login", "/signup"], methods=["POST"]),
    ]
    app = make_app(rules=auth, clock=FakeClock())
    async with client(app) as c:
        assert (await c.post("/login")).status_code == 200
        assert (await c.post("/signup")).status_code == 200
        assert (await c.post("/login")).status_code == 429
        assert (await c.get("/login")).status_code == 200  # GET is not limited by the rule
        assert (await c.post("/a")).status_code == 200


async def test_custom_key_functions_sync_and_async() -> None:
    def tenant(request: Request) -> str:
        return request.headers.get("x-tenant", "anon")

    async def tenant_async(request: Request) -> str:
        return request.headers.get("x-tenant", "anon")

    for key in (tenant, tenant_async):
        app = make_app(limits="1/minute", key=key, clock=FakeClock())
        async with client(app) as c:
            assert (await c.get("/", headers={"X-Tenant": "a"})).status_code == 200
            assert (await c.get("/", headers={"X-Tenant": "a"})).status_code == 429
            assert (await c.get("/", headers={"X-Tenant": "b"})).status_code == 200


async def test_spoofed_forwarded_for_from_untrusted_peer() -> None:
    app = make_app(limits="1/minute", trusted_proxies=["10.0.0.0/8"], clock=FakeClock())
    async with client(app, ("198.51.100.20", 1)) as c:
        assert (await c.get("/", headers={"X-Forwarded-For": "1.1.1.1"})).status_code == 200
        # a fresh forged address does not buy a fresh budget
        assert (await c.get("/", headers={"X-Forwarded-For": "2.2.2.2"})).status_code == 429


async def test_forwarded_for_from_trusted_proxy() -> None:
    app = make_app(limits="1/minute", trusted_proxies=["10.0.0.0/8"], clock=FakeClock())
    async with client(app, ("10.0.0.5", 1)) as c:
        assert (await c.get("/", headers={"X-Forwarded-For": "1.1.1.1"})).status_code == 200
        assert (await c.get("/", headers={"X-Forwarded-For": "1.1.1.1"})).status_code == 429
        assert (await c.get("/", headers={"X-Forwarded-For": "2.2.2.2"})).status_code == 200
        # forged left part, real client appended by the proxy: keyed by the real one
        r = await c.get("/", headers={"X-Forwarded-For": "9.9.9.9, 2.2.2.2"})
        assert r.status_code == 429
        r = await c.get("/", headers={"X-Forwarded-For": "garbage, ,"})
        assert r.status_code == 200  # malformed: keyed by the proxy itself, no 500


async def test_store_outage_fails_open_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(limits="1/minute", store=AsyncDownStore())
    with caplog.at_level(logging.WARNING, "ratekeeper"):
        async with client(app) as c:
            for _ in range(3):
                r = await c.get("/")
                assert r.status_code == 200 and r.text == "hello"
                assert "RateLimit" not in r.headers
    assert any(
        rec.levelno == logging.WARNING and "unavailable" in rec.getMessage()
        for rec in caplog.records
    )


async def test_store_outage_deny() -> None:
    app = make_app(limits="1/minute", store=AsyncDownStore(), on_store_error="deny")
    async with client(app) as c:
        r = await c.get("/")
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert "RateLimit" not in r.headers  # the budget is unknown


async def test_on_denied_hook_and_headers_off() -> None:
    async def on_denied(request: Request, decision: Decision) -> Response:
        return JSONResponse({"slow": "down"}, status_code=429, headers={"X-Custom": "1"})

    app = make_app(limits="1/minute", on_denied=on_denied, headers=False, clock=FakeClock())
    async with client(app) as c:
        r = await c.get("/")
        assert "RateLimit" not in r.headers and "X-RateLimit-Limit" not in r.headers
        r = await c.get("/")
        assert r.status_code == 429 and r.json() == {"slow": "down"}
        assert r.headers["X-Custom"] == "1"


async def test_only_selected_header_groups() -> None:
    app = make_app(limits="1/minute", headers=["ratelimit", "retry-after"], clock=FakeClock())
    async with client(app) as c:
        r = await c.get("/")
        assert "RateLimit" in r.headers and "X-RateLimit-Limit" not in r.headers
        r = await c.get("/")
        assert r.headers["Retry-After"] == "60" and "X-RateLimit-Reset" not in r.headers


async def test_websocket_and_lifespan_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def nothing() -> dict[str, Any]:
        return {}

    async def ignore(message: Any) -> None:
        pass

    middleware = RateLimitMiddleware(inner, "1/minute", clock=FakeClock())
    for kind in ("lifespan", "websocket", "websocket", "websocket"):
        await middleware({"type": kind, "path": "/ws", "headers": []}, nothing, ignore)
    assert seen == ["lifespan", "websocket", "websocket", "websocket"]


async def test_lifespan_shutdown_closes_url_stores() -> None:
    closed: list[str] = []
    sent: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "lifespan.shutdown.complete"})

    async def nothing() -> dict[str, Any]:
        return {}

    async def record(message: Any) -> None:
        sent.append(message["type"])

    middleware = RateLimitMiddleware(app, "1/minute", store="memory://")

    async def aclose() -> None:
        closed.append("closed")

    middleware.engine.aclose = aclose  # type: ignore[method-assign]
    await middleware({"type": "lifespan"}, nothing, record)
    assert closed == ["closed"] and sent == ["lifespan.shutdown.complete"]


async def test_any_asgi_app() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = RateLimitMiddleware(bare, "1/minute", clock=FakeClock())
    async with client(app) as c:
        r = await c.get("/anything")
        assert r.status_code == 204 and r.headers["X-RateLimit-Remaining"] == "0"
        assert (await c.get("/anything")).status_code == 429
    with pytest.raises(TypeError):
        RateLimitMiddleware(bare, "1/minute", engine=app.engine)


async def test_sync_endpoint() -> None:
    app = make_app(limits="1/minute", clock=FakeClock())
    async with client(app) as c:
        r = await c.get("/sync")
        assert r.text == "hello sync" and r.headers["X-RateLimit-Remaining"] == "0"
        assert (await c.get("/sync")).status_code == 429


async def test_concurrent_requests_admit_exactly_the_limit() -> None:
    import asyncio

    app = make_app(limits="10/minute", clock=FakeClock())
    async with client(app) as c:
        responses = await asyncio.gather(*(c.get("/") for _ in range(50)))
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 40


async def test_the_middleware_s_default_limits_as_an_async_chain() -> None:
    """``RateLimitMiddleware(app, limiter=AsyncChain(...), keys=[...])``: a site-wide level and
    a per-client level, all-or-nothing; the per-client denial leaves the site's budget alone."""
    store, clock = AsyncMemoryStore(), FakeClock()
    chain = AsyncChain(
        AsyncRateLimiter("4/minute", store=store, clock=clock),
        AsyncRateLimiter("2/minute", store=store, clock=clock),
    )
    app = make_app(limiter=chain, keys=["site", "client:{ip}"])
    async with (
        client(app) as c,
        client(app, ("198.51.100.9", 1)) as other,
        client(app, ("192.0.2.1", 1)) as third,
    ):
        assert [(await c.get("/")).status_code for _ in range(3)] == [200, 200, 429]
        assert [(await other.get("/")).status_code for _ in range(3)] == [200, 200, 429]
        r = await third.get("/")  # the site's 4 are used
        assert r.status_code == 429 and r.headers["X-RateLimit-Limit"] == "4"
