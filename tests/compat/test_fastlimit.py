"""FastLimit's shape: check with per-call rates and tenant tiers, get_usage, reset, connect, and
the FastAPI decorator sharing check's budgets."""

from __future__ import annotations

from typing import Any

import pytest

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
