import math

import pytest

from ratekeeper import Decision, Limit, RateLimiter
from ratekeeper.testing import FakeClock


def test_bool_and_fields():
    limit = Limit(10, per=60)
    d = Decision(True, 10, 9, 6.0, 0.0, 0.0, limit)
    assert bool(d) is True
    assert not Decision(False, 10, 0, 60.0, 6.0, 0.0, limit)
    assert (d.allowed, d.limit, d.remaining, d.reset_after, d.retry_after, d.delay, d.policy) == (
        True,
        10,
        9,
        6.0,
        0.0,
        0.0,
        limit,
    )
    assert d.fallback is False
    assert d == Decision(True, 10, 9, 6.0, 0.0, 0.0, limit)
    assert "allowed=True" in repr(d)


def test_headers_allowed_single_limit():
    clock = FakeClock()
    limiter = RateLimiter("100/minute", clock=clock)
    for _ in range(58):
        d = limiter.hit("k")
    assert d.headers() == {
        "RateLimit-Policy": '"100-per-60s";q=100;w=60',
        "RateLimit": '"100-per-60s";r=42;t=35',
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "42",
        "X-RateLimit-Reset": "35",
    }


def test_headers_denied_has_retry_after_rounded_up():
    limiter = RateLimiter("100/minute", clock=FakeClock())
    for _ in range(100):
        limiter.hit("k")
    d = limiter.hit("k")
    h = d.headers()
    assert d.retry_after == pytest.approx(0.6)
    assert h["Retry-After"] == "1"
    assert h["RateLimit"] == '"100-per-60s";r=0;t=1'
    assert int(h["Retry-After"]) >= 1
    assert h["X-RateLimit-Remaining"] == "0"


def test_headers_multi_limit_lists_each_and_x_fields_bind():
    limiter = RateLimiter("2/second;10/minute", clock=FakeClock())
    d = limiter.hit("k")
    h = d.headers()
    assert h["RateLimit-Policy"] == '"2-per-1s";q=2;w=1, "10-per-60s";q=10;w=60'
    assert h["RateLimit"] == '"2-per-1s";r=1;t=1, "10-per-60s";r=9;t=6'
    assert h["X-RateLimit-Limit"] == "2"  # least remaining binds
    limiter.hit("k")
    denied = limiter.hit("k")
    h = denied.headers()
    assert h["X-RateLimit-Limit"] == "2" and h["Retry-After"] == "1"
    # the hour limit is reported as it is: the denial consumed nothing
    assert h["RateLimit"] == '"2-per-1s";r=0;t=1, "10-per-60s";r=8;t=12'


def test_retry_after_never_earlier_than_t():
    limiter = RateLimiter("3/10s", algorithm="fixed_window", clock=FakeClock(1_000_003.5))
    for _ in range(3):
        limiter.hit("k")
    h = limiter.hit("k").headers()
    t = int(h["RateLimit"].rsplit("t=", 1)[1])
    assert int(h["Retry-After"]) >= t == 7


def test_no_retry_after_when_never_possible():
    d = RateLimiter("3/second").hit("k", cost=4)
    assert math.isinf(d.retry_after) and "Retry-After" not in d.headers()


def test_fractional_period_header():
    d = RateLimiter("3/1.5s").hit("k")
    assert d.headers()["RateLimit-Policy"] == '"3-per-1.5s";q=3;w=2'
