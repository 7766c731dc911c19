"""distlimiter's shape: allow, get_stats, reset; get_stats for ratekeeper's own limiters."""

from __future__ import annotations

import pytest

from ratekeeper import ConfigError, Limit, RateLimiter
from ratekeeper.compat import distlimiter
from ratekeeper.testing import FakeClock


async def test_allow_get_stats_reset() -> None:
    clock = FakeClock()
    limiter = distlimiter.RateLimiter(Limit(10, per=10), clock=clock, key_prefix="api")
    assert [await limiter.allow("user123") for _ in range(11)] == [True] * 10 + [False]
    stats = await limiter.get_stats("user123")
    assert stats == {
        "key": "user123",
        "algorithm": "token_bucket",
        "limit": 10,
        "window_seconds": 10,
        "remaining": 0,
        "used": 10,
        "reset_after": 10.0,
        "allowed": 10,
        "denied": 1,
    }
    clock.advance(3)  # refill_rate 1/s: three back, peeking consumed nothing
    assert (await limiter.get_stats("user123"))["remaining"] == 3
    assert (await limiter.get_stats("user123"))["remaining"] == 3
    await limiter.reset("user123")
    assert (await limiter.get_stats("user123"))["remaining"] == 10
    assert (await limiter.get_stats("other"))["used"] == 0


async def test_key_prefix_namespaces_keys_on_a_shared_store() -> None:
    clock = FakeClock()
    store = RateLimiter("1/minute", clock=clock).store  # one memory store for both
    a = distlimiter.RateLimiter("1/minute", store=store, key_prefix="a", clock=clock)
    b = distlimiter.RateLimiter("1/minute", store=store, key_prefix="b", clock=clock)
    assert await a.allow("k") and await b.allow("k")
    assert not await a.allow("k")
    await a.close()


def test_get_stats_of_a_sync_limiter_and_bad_limits() -> None:
    limiter = RateLimiter("5/minute", algorithm="fixed_window", clock=FakeClock(start=60))
    limiter.hit("k", cost=2)
    stats = distlimiter.get_stats(limiter, "k")
    assert (stats["remaining"], stats["used"], stats["algorithm"]) == (3, 2, "fixed_window")
    assert stats["reset_after"] == 60.0 and stats["allowed"] == 1
    with pytest.raises(ConfigError):
        distlimiter.RateLimiter("5 per fortnight")
