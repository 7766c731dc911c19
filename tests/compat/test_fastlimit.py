"""FastLimit's shape: check with per-call rates and tenant tiers, get_usage, reset, connect, and
the FastAPI decorator sharing check's budgets."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from ratekeeper import ConfigError, RateLimitExceeded, StoreUnavailable
from ratekeeper.compat.fastlimit import RateLimiter
from ratekeeper.testing import FakeClock

from ..integrations.conftest import AsyncDownStore

TIERS = {"free": "2/minute", "premium": "50/second"}


def make(**options: Any) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock(start=1_700_000_000)
    return RateLimiter(clock=clock, tiers=TIERS, **options), clock


async def test_check_per_call_rates_keep_separate_states() -> None:
    limiter, clock = make()
    assert await limiter.check("user:1", rate="2/minute")
    assert await limiter.check("user:1", rate="2/minute")
    with pytest.raises(RateLimitExceeded) as denied:
        await limiter.check("user:1", rate="2/minute")
    assert denied.value.decision.limit == 2
    assert denied.value.headers["Retry-After"] == "40"  # fixed_window: the minute ends
    assert await limiter.check("user:1", rate="3/minute")  # another rate, another state
    assert await limiter.check("user:2", rate="2/minute")  # another key
    clock.advance(40)
    assert await limiter.check("user:1", rate="2/minute")


async def test_tenant_types_are_namespaced_and_pick_their_tier() -> None:
    limiter, _ = make()
    await limiter.check("k", tenant_type="free")
    await limiter.check("k", tenant_type="free")
    with pytest.raises(RateLimitExceeded):
        await limiter.check("k", tenant_type="free")
    for _ in range(50):  # premium: 50/second, its own budget for the same key
        await limiter.check("k", tenant_type="premium")
    with pytest.raises(RateLimitExceeded):
        await limiter.check("k", tenant_type="premium")
    # the same rate under two tenant types: two counters
    await limiter.check("j", rate="1/minute", tenant_type="a")
    await limiter.check("j", rate="1/minute", tenant_type="b")
    await limiter.check("j", rate="1/minute")  # tenant "default"
    with pytest.raises(ConfigError, match="no tier 'gold'"):
        await limiter.check("k", tenant_type="gold")


async def test_cost_get_usage_and_reset() -> None:
    limiter, _ = make(default_algorithm="token_bucket")
    await limiter.check("u", rate="10/minute", cost=4)
    usage = await limiter.get_usage("u", rate="10/minute")
    assert usage == {"current": 4, "limit": 10, "remaining": 6, "ttl": 24, "window_seconds": 60}
    assert (await limiter.get_usage("u", rate="10/minute"))["remaining"] == 6  # consumed nothing
    await limiter.check("u", tenant_type="free")
    await limiter.reset("u")  # under every rate used, in the default tenant
    assert (await limiter.get_usage("u", rate="10/minute"))["remaining"] == 10
    assert (await limiter.get_usage("u", tenant_type="free"))["remaining"] == 1  # other tenant
    await limiter.reset("u", tenant_type="free")
    assert (await limiter.get_usage("u", tenant_type="free"))["remaining"] == 2


async def test_connect_and_a_dead_store() -> None:
    async with RateLimiter(tiers=TIERS) as limiter:  # connect() pings the memory store
        assert await limiter.health_check()
    down = RateLimiter(AsyncDownStore(), tiers=TIERS)
    assert not await down.health_check()
    with pytest.raises(StoreUnavailable):
        await down.connect()
    with pytest.raises(StoreUnavailable):  # on_store_error="raise", FastLimit's BackendError
        await down.check("k", tenant_type="free")
    allowing = RateLimiter(AsyncDownStore(), on_store_error="allow")
    assert await allowing.check("k", rate="1/minute")
    with pytest.raises(ConfigError):
        await RateLimiter().check("k")  # no rate and no tiers
    with pytest.raises(ConfigError):
        await RateLimiter().check("k", rate="5 per fortnight")


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_decorator_shares_checks_budgets_with_tiers_costs_and_callable_rates() -> None:
    limiter, clock = make()
    app = FastAPI()

    def user_of(request: Request) -> str:
        return f"user:{request.headers['x-user']}"

    async def plan_of(request: Request) -> str:  # async functions are awaited
        return request.headers.get("x-plan", "free")

    @app.get("/search")
    @limiter.limit(key=user_of, tenant_type=plan_of)  # no rate: the tenant's tier
    async def search() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/export")
    @limiter.limit(
        lambda request: "10/minute" if request.headers.get("x-big") else "4/minute",
        key=user_of,
        cost=lambda request: int(request.headers.get("x-rows", "1")),
    )
    def export() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/ping")
    @limiter.limit("1/minute")  # FastLimit's default key: the client address
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    async with client(app) as c:
        free = {"x-user": "1"}
        assert (await c.get("/search", headers=free)).status_code == 200
        await limiter.check("user:1", tenant_type="free")  # the route's budget: now spent
        r = await c.get("/search", headers=free)
        assert r.status_code == 429 and r.headers["X-RateLimit-Limit"] == "2"
        premium = {"x-user": "1", "x-plan": "premium"}
        assert (await c.get("/search", headers=premium)).status_code == 200
        assert (await limiter.get_usage("user:1", tenant_type="premium"))["current"] == 1

        assert (await c.get("/export", headers={**free, "x-rows": "3"})).status_code == 200
        assert (await c.get("/export", headers={**free, "x-rows": "2"})).status_code == 429
        big = {**free, "x-big": "1", "x-rows": "9"}  # another rate: its own state
        assert (await c.get("/export", headers=big)).status_code == 200

        assert (await c.get("/ping")).status_code == 200
        with pytest.raises(RateLimitExceeded):  # the same key the decorator used
            await limiter.check("ip:203.0.113.7", rate="1/minute")
        await limiter.reset("ip:203.0.113.7")  # a decorator's fixed rate is reset too
        assert (await c.get("/ping")).status_code == 200
        clock.advance(60)
        assert (await c.get("/search", headers=free)).status_code == 200
    with pytest.raises(ConfigError):
        RateLimiter().limit()  # no rate and no tiers: at decoration time
