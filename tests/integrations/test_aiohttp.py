"""aiohttp middleware and handler decorator, driven by aiohttp's TestClient/TestServer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ratekeeper import Decision, RateLimiter
from ratekeeper.integrations import api_key, cost_from_header
from ratekeeper.integrations.aiohttp import Limiter
from ratekeeper.testing import FakeClock

from .conftest import TIERS, AsyncDownStore, tier_of

Factory = Callable[[web.Application], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Factory]:
    clients: list[TestClient[Any, Any]] = []

    async def start(app: web.Application) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def make_app(limiter: Limiter) -> web.Application:
    app = web.Application(middlewares=[limiter.middleware])
    app.router.add_get("/", hello)
    app.router.add_get("/health", hello)
    return app


async def test_default_limits_429_and_headers(serve: Factory) -> None:
    clock = FakeClock()
    limiter = Limiter("2/minute", clock=clock, exempt_paths=["/health"])
    c = await serve(make_app(limiter))
    r = await c.get("/")
    assert r.status == 200 and await r.text() == "hello"
    assert r.headers["X-RateLimit-Remaining"] == "1"
    assert r.headers["RateLimit-Policy"] == '"2-per-60s";q=2;w=60'
    assert (await c.get("/")).status == 200
    r = await c.get("/")
    assert r.status == 429
    assert r.headers["Retry-After"] == "30" and r.headers["RateLimit"] == '"2-per-60s";r=0;t=30'
    assert (await r.json())["retry_after"] == 30
    for _ in range(3):
        r = await c.get("/health")
        assert r.status == 200 and "RateLimit" not in r.headers
    clock.advance(30)
    assert (await c.get("/")).status == 200


async def test_handler_decorator_costs_shared_and_exempt(serve: Factory) -> None:
    limiter = Limiter("100/minute", clock=FakeClock())
    app = make_app(limiter)

    @limiter.limit("10/minute", cost=cost_from_header("X-Cost"))
    async def costly(request: web.Request) -> web.Response:
        return web.Response(text="costly")

    @limiter.limit("2/minute", scope="writes")
    async def write_a(request: web.Request) -> web.Response:
        return web.Response(text="a")

    @limiter.limit("2/minute", scope="writes")
    async def write_b(request: web.Request) -> web.Response:
        return web.Response(text="b")

    @limiter.exempt
    async def free(request: web.Request) -> web.Response:
        return web.Response(text="free")

    app.router.add_get("/costly", costly)
    app.router.add_post("/a", write_a)
    app.router.add_post("/b", write_b)
    app.router.add_get("/free", free)
    c = await serve(app)
    r = await c.get("/costly", headers={"X-Cost": "9"})
    assert r.status == 200 and r.headers["X-RateLimit-Remaining"] == "1"  # the route's limit
    assert (await c.get("/costly", headers={"X-Cost": "bad"})).status == 200
    assert (await c.get("/costly", headers={"X-Cost": "1"})).status == 429
    assert [(await c.post(p)).status for p in ("/a", "/b", "/a")] == [200, 200, 429]
    for _ in range(3):
        r = await c.get("/free")
        assert r.status == 200 and "RateLimit" not in r.headers


async def test_dynamic_tiers_and_custom_keys(serve: Factory) -> None:
    limiter = Limiter(clock=FakeClock())
    app = make_app(limiter)

    async def tier_limit(request: web.Request) -> str | None:
        return TIERS[tier_of(request.headers.get("X-API-Key"))]

    @limiter.limit(tier_limit, key=api_key())
    async def data(request: web.Request) -> web.Response:
        return web.Response(text="data")

    @limiter.limit("1/minute", key=lambda request: request.query["user"])
    async def by_user(request: web.Request) -> web.Response:
        return web.Response(text="user")

    app.router.add_get("/data", data)
    app.router.add_get("/user", by_user)
    c = await serve(app)
    for key, allowed in (("free-1", 2), ("pro-1", 5), ("enterprise-1", 7)):
        codes = [(await c.get("/data", headers={"X-API-Key": key})).status for _ in range(7)]
        assert codes == [200] * allowed + [429] * (7 - allowed)
    assert [(await c.get("/user?user=u1")).status for _ in range(2)] == [200, 429]
    assert (await c.get("/user?user=u2")).status == 200
    assert (await c.get("/user")).status == 200  # the key function raised: keyed by address


async def test_spoofing_untrusted_and_trusted_proxy(serve: Factory) -> None:
    untrusted = Limiter("1/minute", clock=FakeClock(), trusted_proxies=["10.0.0.0/8"])
    c = await serve(make_app(untrusted))  # the test peer, 127.0.0.1, is not a proxy
    assert (await c.get("/", headers={"X-Forwarded-For": "1.1.1.1"})).status == 200
    assert (await c.get("/", headers={"X-Forwarded-For": "2.2.2.2"})).status == 429
    trusted = Limiter("1/minute", clock=FakeClock(), trusted_proxies=["127.0.0.1"])
    c = await serve(make_app(trusted))
    assert (await c.get("/", headers={"X-Forwarded-For": "1.1.1.1"})).status == 200
    assert (await c.get("/", headers={"X-Forwarded-For": "2.2.2.2"})).status == 200
    assert (await c.get("/", headers={"X-Forwarded-For": "6.6.6.6, 2.2.2.2"})).status == 429


async def test_store_outage_fails_open(serve: Factory, caplog: pytest.LogCaptureFixture) -> None:
    limiter = Limiter("1/minute", store=AsyncDownStore())
    c = await serve(make_app(limiter))
    with caplog.at_level(logging.WARNING, "ratekeeper"):
        assert [(await c.get("/")).status for _ in range(3)] == [200] * 3
    assert "unavailable" in caplog.text


async def test_on_denied_enforce_and_errors_get_headers(serve: Factory) -> None:
    async def on_denied(request: web.Request, decision: Decision) -> web.Response:
        return web.json_response({"wait": decision.retry_after}, status=429)

    limiter = Limiter("3/minute", clock=FakeClock(), on_denied=on_denied)
    app = web.Application()
    limiter.setup(app)
    quota = RateLimiter("1/minute", clock=FakeClock())

    async def enforced(request: web.Request) -> web.Response:
        quota.enforce("k")
        return web.Response(text="ok")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app.router.add_get("/enforced", enforced)
    app.router.add_get("/missing", missing)
    c = await serve(app)
    r = await c.get("/missing")
    assert r.status == 404 and r.headers["X-RateLimit-Remaining"] == "2"
    assert (await c.get("/enforced")).status == 200
    r = await c.get("/enforced")
    assert r.status == 429 and await r.json() == {"wait": 60.0}


async def test_an_on_denied_that_gives_no_response_means_the_default_429(serve: Factory) -> None:
    def on_denied(request: web.Request, decision: Decision) -> Any:
        return {"not": "a response"}

    limiter = Limiter("1/minute", clock=FakeClock(), on_denied=on_denied)
    app = web.Application(middlewares=[limiter.middleware])
    app.router.add_get("/", hello)
    c = await serve(app)
    assert (await c.get("/")).status == 200
    r = await c.get("/")
    assert r.status == 429 and (await r.json())["error"] == "rate_limit_exceeded"
