"""netrun's shape: rate_limit(rate=, period=), limit_by_user, limit_by_api_key on FastAPI routes,
RateLimitExceeded(...).headers, X-RateLimit-Reset as a Unix timestamp."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ratekeeper import RateLimiter, RateLimitExceeded
from ratekeeper.compat.netrun import limit_by_api_key, limit_by_user, rate_limit
from ratekeeper.integrations.fastapi import Limiter
from ratekeeper.testing import FakeClock

NOW = 1_700_000_000.25  # a Unix time, a quarter second past a whole one


def client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_rate_limit_with_epoch_reset_and_no_handler() -> None:
    clock = FakeClock(start=NOW)
    app = FastAPI()

    @app.get("/data")
    @rate_limit(rate=2, period=60, limiter=Limiter(clock=clock, reset_header="epoch"))
    async def data(request: Request) -> dict[str, str]:
        return {"data": "value"}

    async with client(app) as c:
        first = await c.get("/data")
        assert first.status_code == 200
        # one unit used, back in 30 s: the Unix time of that, rounded up
        assert first.headers["X-RateLimit-Reset"] == str(1_700_000_031)
        assert first.headers["RateLimit"] == '"2-per-60s";r=1;t=30'  # the draft's t: seconds
        assert (await c.get("/data")).status_code == 200
        denied = await c.get("/data")  # no exception handler: still a 429 with the headers
        assert denied.status_code == 429
        assert denied.headers["Retry-After"] == "30"
        assert denied.headers["X-RateLimit-Reset"] == str(1_700_000_031)
        assert (await c.get("/data", headers={"x-forwarded-for": "1.2.3.4"})).status_code == 429
        assert (await client(app, "198.51.100.1").get("/data")).status_code == 200
        clock.advance(30)
        assert (await c.get("/data")).status_code == 200


async def test_defaults_a_fixed_key_and_burst() -> None:
    app = FastAPI()

    @app.get("/shared")
    @rate_limit(rate=1, period=3600, burst=2, key="everyone")  # netrun: a fixed key string
    def shared() -> dict[str, bool]:
        return {"ok": True}

    async with client(app) as c, client(app, "198.51.100.1") as other:
        assert (await c.get("/shared")).status_code == 200
        r = await other.get("/shared")  # the same budget for every caller
        assert r.status_code == 200
        reset = int(r.headers["X-RateLimit-Reset"])  # epoch by default, as netrun's
        assert reset > 1_600_000_000
        assert (await c.get("/shared")).status_code == 429


async def test_limit_by_user_and_by_api_key_with_netrun_exception_headers() -> None:
    clock = FakeClock(start=NOW)
    app = FastAPI()
    web = Limiter(clock=clock, reset_header="epoch")

    class User:
        def __init__(self, uid: int) -> None:
            self.id = uid

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if "x-user" in request.headers:
            request.state.user = User(int(request.headers["x-user"]))
        return await call_next(request)

    @app.exception_handler(RateLimitExceeded)
    async def denied(request: Request, exc: RateLimitExceeded) -> JSONResponse:
        return JSONResponse({"error": "slow down"}, status_code=429, headers=exc.headers)

    @app.get("/profile")
    @limit_by_user(rate=1, period=60, limiter=web)
    async def profile(request: Request) -> dict[str, int]:
        return {"user": request.state.user.id}

    @app.get("/reports")
    @limit_by_api_key(rate=1, period=60, limiter=web)
    async def reports() -> dict[str, str]:
        return {"status": "ok"}

    async with client(app) as c:
        assert (await c.get("/profile", headers={"x-user": "1"})).json() == {"user": 1}
        r = await c.get("/profile", headers={"x-user": "1"})
        assert (r.status_code, r.json()) == (429, {"error": "slow down"})
        assert r.headers["X-RateLimit-Reset"] == str(1_700_000_061)
        assert r.headers["Retry-After"] == "60"
        assert (await c.get("/profile", headers={"x-user": "2"})).status_code == 200
        for key in ("k1", "k2"):
            assert (await c.get("/reports", headers={"X-API-Key": key})).status_code == 200
        assert (await c.get("/reports", headers={"X-API-Key": "k1"})).status_code == 429
        assert (await c.get("/reports")).status_code == 200  # no key: by client address
        assert (await c.get("/reports")).status_code == 429


def test_exception_headers_of_a_plain_limiter() -> None:
    limiter = RateLimiter("1/minute", clock=FakeClock(start=NOW))
    limiter.hit("k")
    try:
        limiter.enforce("k")
    except RateLimitExceeded as exc:
        assert exc.headers == exc.decision.headers()
        assert exc.headers["Retry-After"] == "60"
        assert exc.decision.headers(reset="epoch", now=NOW)["X-RateLimit-Reset"] == str(
            1_700_000_061
        )
        assert exc.decision.headers()["X-RateLimit-Reset"] == "60"
        with pytest.raises(ValueError, match="'seconds' or 'epoch'"):
            exc.decision.headers(reset="iso")  # type: ignore[arg-type]
    else:  # pragma: no cover
        raise AssertionError("not denied")
