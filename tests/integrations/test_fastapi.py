"""FastAPI: route decorator, dependency, exception handler, middleware defaults."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from ratekeeper import RateLimiter
from ratekeeper.integrations import api_key, header
from ratekeeper.integrations.fastapi import Limiter, RateLimit
from ratekeeper.testing import FakeClock

from .conftest import TIERS, AsyncDownStore, tier_of

PEER = ("203.0.113.7", 50000)


def client(app: Any, peer: tuple[str, int] = PEER) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=peer), base_url="http://testserver"
    )


def make_app(**options: Any) -> tuple[FastAPI, Limiter, FakeClock]:
    clock = FakeClock()
    limiter = Limiter(clock=clock, **options)
    app = FastAPI()
    limiter.init_app(app)
    return app, limiter, clock


async def test_decorator_async_and_sync_views() -> None:
    app, limiter, clock = make_app()

    @app.get("/async/{item}")
    @limiter.limit("2/minute")
    async def async_view(item: int, q: str = "") -> dict[str, Any]:
        return {"item": item, "q": q}

    @app.get("/sync")
    @limiter.limit("2/minute")
    def sync_view(request: Request) -> dict[str, Any]:
        return {"path": request.url.path}

    async with client(app) as c:
        for path in ("/async/5?q=x", "/sync"):
            r = await c.get(path)
            assert r.status_code == 200
            assert r.headers["X-RateLimit-Remaining"] == "1"
            assert (await c.get(path)).status_code == 200
            r = await c.get(path)
            assert r.status_code == 429
            assert r.headers["Retry-After"] == "30"
            assert r.headers["RateLimit-Policy"] == '"2-per-60s";q=2;w=60'
            assert r.json()["error"] == "rate_limit_exceeded"
        clock.advance(30)
        assert (await c.get("/async/5?q=y")).json() == {"item": 5, "q": "y"}
    # path params and query params still documented in the schema; the injected ones are not
    schema = app.openapi()["paths"]["/async/{item}"]["get"]["parameters"]
    assert {p["name"] for p in schema} == {"item", "q"}


async def test_dependency_and_costs() -> None:
    clock = FakeClock()
    app = FastAPI()

    @app.get("/dep", dependencies=[Depends(RateLimit("5/minute", cost=2, clock=clock))])
    async def dep() -> dict[str, bool]:
        return {"ok": True}

    async with client(app) as c:  # no init_app: a denial is still a 429 with headers
        assert (await c.get("/dep")).headers["X-RateLimit-Remaining"] == "3"
        assert (await c.get("/dep")).headers["X-RateLimit-Remaining"] == "1"
        r = await c.get("/dep")
        assert r.status_code == 429 and "Retry-After" in r.headers
        assert r.json()["detail"].startswith("Rate limit exceeded")


async def test_dependency_is_per_route_unless_scoped() -> None:
    app, limiter, _ = make_app()
    per_route = limiter.dependency("1/minute")
    shared = limiter.dependency("1/minute", scope="shared")

    @app.get("/r1", dependencies=[Depends(per_route)])
    async def r1() -> str:
        return "r1"

    @app.get("/r2", dependencies=[Depends(per_route)])
    async def r2() -> str:
        return "r2"

    @app.get("/s1", dependencies=[Depends(shared)])
    async def s1() -> str:
        return "s1"

    @app.get("/s2", dependencies=[Depends(shared)])
    async def s2() -> str:
        return "s2"

    async with client(app) as c:
        assert [(await c.get(p)).status_code for p in ("/r1", "/r2", "/r1")] == [200, 200, 429]
        assert [(await c.get(p)).status_code for p in ("/s1", "/s2")] == [200, 429]


async def test_shared_scope_between_decorated_routes() -> None:
    app, limiter, _ = make_app()

    @app.post("/export/csv")
    @limiter.limit("3/minute", scope="exports")
    async def csv() -> str:
        return "csv"

    @app.post("/export/pdf")
    @limiter.limit("3/minute", scope="exports", cost=2)
    async def pdf() -> str:
        return "pdf"

    async with client(app) as c:
        assert (await c.post("/export/pdf")).status_code == 200
        assert (await c.post("/export/csv")).status_code == 200
        assert (await c.post("/export/csv")).status_code == 429


async def test_dynamic_tiers_with_async_functions() -> None:
    async def tier_limit(request: Request) -> str | None:
        return TIERS[tier_of(request.headers.get("x-api-key"))]

    app, limiter, _ = make_app(key=api_key())

    @app.get("/data")
    @limiter.limit(tier_limit)
    async def data() -> str:
        return "data"

    async with client(app) as c:
        for api_key_value, allowed in (("free-a", 2), ("pro-b", 5), ("enterprise-c", 8)):
            codes = [
                (await c.get("/data", headers={"X-API-Key": api_key_value})).status_code
                for _ in range(8)
            ]
            assert codes == [200] * allowed + [429] * (8 - allowed)


async def test_custom_keys_sync_and_async() -> None:
    app, limiter, _ = make_app()

    async def by_tenant(request: Request) -> str:
        return request.headers["x-tenant"]

    @app.get("/a")
    @limiter.limit("1/minute", key=by_tenant)
    async def a() -> str:
        return "a"

    @app.get("/b")
    @limiter.limit("1/minute", key=lambda request: request.query_params["user"])
    def b() -> str:
        return "b"

    async with client(app) as c:
        assert (await c.get("/a", headers={"X-Tenant": "t1"})).status_code == 200
        assert (await c.get("/a", headers={"X-Tenant": "t1"})).status_code == 429
        assert (await c.get("/a", headers={"X-Tenant": "t2"})).status_code == 200
        assert (await c.get("/b?user=u1")).status_code == 200
        assert (await c.get("/b?user=u1")).status_code == 429
        assert (await c.get("/b?user=u2")).status_code == 200
        # the key function raises (missing header): keyed by client address, never a 500
        assert (await c.get("/a")).status_code == 200
        assert (await c.get("/a")).status_code == 429


async def test_default_limits_with_route_limits_and_exempt_paths() -> None:
    app, limiter, _ = make_app(default_limits="3/minute", exempt_paths=["/health"])

    @app.get("/health")
    async def health() -> str:
        return "ok"

    @app.get("/tight")
    @limiter.limit("1/minute")
    async def tight() -> str:
        return "tight"

    @app.get("/plain")
    async def plain() -> PlainTextResponse:
        return PlainTextResponse("plain")

    async with client(app) as c:
        for _ in range(5):
            r = await c.get("/health")
            assert r.status_code == 200 and "RateLimit" not in r.headers
        r = await c.get("/tight")
        # the route's own limit replaces the defaults (not counted against them)
        assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "1"
        assert (await c.get("/tight")).status_code == 429
        r = await c.get("/plain")
        assert r.status_code == 200 and r.headers["X-RateLimit-Limit"] == "3"
        assert r.headers["X-RateLimit-Remaining"] == "2"
        assert [(await c.get("/plain")).status_code for _ in range(3)] == [200, 200, 429]


async def test_returned_response_gets_headers_without_middleware() -> None:
    limiter = Limiter(clock=FakeClock())
    app = FastAPI()

    @app.get("/resp")
    @limiter.limit("2/minute")
    async def resp() -> PlainTextResponse:
        return PlainTextResponse("raw")

    async with client(app) as c:
        r = await c.get("/resp")
        assert r.text == "raw" and r.headers["X-RateLimit-Remaining"] == "1"


async def test_exception_handler_for_enforce_in_view() -> None:
    app, _, _ = make_app()
    quota = RateLimiter("1/minute", clock=FakeClock())

    @app.get("/enforced")
    async def enforced() -> str:
        quota.enforce("global")
        return "ok"

    async with client(app) as c:
        assert (await c.get("/enforced")).status_code == 200
        r = await c.get("/enforced")
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"
        assert r.json()["retry_after"] == 60


async def test_spoofing_and_trusted_proxy() -> None:
    app, limiter, _ = make_app(trusted_proxies=["10.0.0.0/8"])

    @app.get("/x")
    @limiter.limit("1/minute")
    async def x() -> str:
        return "x"

    async with client(app, ("198.51.100.1", 1)) as c:
        assert (await c.get("/x", headers={"X-Forwarded-For": "1.1.1.1"})).status_code == 200
        assert (await c.get("/x", headers={"X-Forwarded-For": "2.2.2.2"})).status_code == 429
    async with client(app, ("10.1.2.3", 1)) as c:
        assert (await c.get("/x", headers={"X-Forwarded-For": "1.1.1.1"})).status_code == 200
        assert (await c.get("/x", headers={"X-Forwarded-For": "2.2.2.2"})).status_code == 200
        assert (await c.get("/x", headers={"X-Forwarded-For": "2.2.2.2"})).status_code == 429


async def test_store_outage_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    limiter = Limiter("1/minute", store=AsyncDownStore(), key=header("X-User"))
    app = FastAPI()
    limiter.init_app(app)

    @app.get("/x")
    @limiter.limit("1/minute")
    async def x() -> str:
        return "x"

    with caplog.at_level(logging.WARNING, "ratekeeper"):
        async with client(app) as c:
            for _ in range(3):
                assert (await c.get("/x")).status_code == 200
    assert "unavailable" in caplog.text


def test_bad_rates_fail_at_definition() -> None:
    from ratekeeper import ConfigError

    with pytest.raises(ConfigError, match="fortnight"):
        RateLimit("1/fortnight")
    limiter = Limiter()
    with pytest.raises(ConfigError, match="fortnight"):
        limiter.limit("1/fortnight")(lambda: None)


async def test_a_dependency_on_a_named_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Depends(RateLimit(limiter="api"))`` uses the default registry's limiter "api": one
    budget for every route it guards, shadow settings and all (issue 11 item 5)."""
    import ratekeeper
    import ratekeeper.registry

    registry = ratekeeper.Registry(discover=False)
    monkeypatch.setattr(ratekeeper.registry, "default_registry", registry)
    registry.configure_limiter("api", "2/minute")
    registry.configure_limiter("try", "1/minute", shadow=True)
    app, limiter, _ = make_app()
    api = Depends(RateLimit(limiter="api"))

    @app.get("/a", dependencies=[api])
    @app.get("/b", dependencies=[api])
    @app.get("/try", dependencies=[Depends(limiter.dependency(limiter="try"))])
    async def view() -> str:
        return "ok"

    async with client(app) as c:
        assert [(await c.get(p)).status_code for p in ("/a", "/b", "/a")] == [200, 200, 429]
        assert [(await c.get("/try")).status_code for _ in range(3)] == [200] * 3
    tried = registry.get_async_limiter("try").metrics()
    assert (tried.allowed, tried.shadow_denied) == (1, 2)
