import pytest

from ratekeeper import RateLimiter
from ratekeeper.testing import (
    AllowAll,
    DenyAll,
    FakeClock,
    assert_allowed,
    assert_allowed_async,
    assert_denied,
    assert_denied_async,
)


def test_fake_clock():
    clock = FakeClock()
    assert clock() == 1_000_000.0
    clock.advance(1.5)
    assert clock() == 1_000_001.5
    assert FakeClock(start=5)() == 5.0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    clock.set(10)
    assert clock() == 10


def test_fake_clock_sleep_advances():
    clock = FakeClock(0)
    clock.sleep(2)
    assert clock() == 2


async def test_fake_clock_async_sleep_advances():
    clock = FakeClock(0)
    await clock.async_sleep(3)
    assert clock() == 3


def test_allow_all_and_deny_all():
    allow, deny = AllowAll(), DenyAll()
    assert all(allow.hit("k") for _ in range(1000))
    assert not deny.hit("k")
    assert deny.hit("k").retry_after > 0
    with pytest.raises(Exception, match="exceeded"):
        deny.enforce("k")
    with pytest.raises(ValueError):
        allow.hit(3)  # type: ignore[arg-type]


def test_assert_helpers():
    limiter = RateLimiter("3/minute", clock=FakeClock())
    assert_allowed(limiter, "k", times=3)
    d = assert_denied(limiter, "k")
    assert d.retry_after > 0
    with pytest.raises(AssertionError, match="was denied"):
        assert_allowed(limiter, "k")
    with pytest.raises(AssertionError, match="was allowed"):
        assert_denied(limiter, "fresh")


async def test_async_assert_helpers():
    from ratekeeper import AsyncRateLimiter

    limiter = AsyncRateLimiter("2/minute", clock=FakeClock())
    await assert_allowed_async(limiter, "k", times=2)
    await assert_denied_async(limiter, "k")
    with pytest.raises(AssertionError):
        await assert_allowed_async(limiter, "k")
