"""The examples of DESIGN.md, per algorithm, driven by a FakeClock."""

import math

import pytest

from ratekeeper import ConfigError, Limit, RateLimiter
from ratekeeper.testing import FakeClock

ALGORITHMS = [
    "token_bucket",
    "leaky_bucket",
    "fixed_window",
    "sliding_window",
    "sliding_log",
    "gcra",
]


def make(limit, algorithm, start=1_000_000.0):
    clock = FakeClock(start)
    return RateLimiter(limit, algorithm=algorithm, clock=clock), clock


def test_default_is_token_bucket():
    assert RateLimiter("1/second").algorithm == "token_bucket"


def test_unknown_algorithm():
    with pytest.raises(ConfigError, match=r"'token-bucket'.*token_bucket"):
        RateLimiter("1/second", algorithm="token-bucket")


def test_token_bucket_100_per_minute():
    limiter, clock = make("100/minute", "token_bucket")
    for i in range(100):
        d = limiter.hit("k")
        assert d.allowed and d.remaining == 99 - i
    denied = limiter.hit("k")
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(0.6)
    assert denied.remaining == 0
    assert denied.reset_after == pytest.approx(60)
    clock.advance(0.59)
    assert not limiter.hit("k").allowed
    clock.advance(0.01)
    assert limiter.hit("k").allowed


def test_token_bucket_burst_and_refill_cap():
    limiter, clock = make(Limit(10, per=1, burst=3), "token_bucket")
    assert [limiter.hit("k").allowed for _ in range(4)] == [True, True, True, False]
    clock.advance(100)  # refill is capped at the burst
    assert [limiter.hit("k").allowed for _ in range(4)] == [True, True, True, False]


def test_fixed_window_aligned_to_clock():
    limiter, clock = make("3/minute", "fixed_window", start=6000.0 + 50)  # 10 s before a window
    assert [limiter.hit("k").allowed for _ in range(4)] == [True, True, True, False]
    denied = limiter.hit("k")
    assert denied.retry_after == pytest.approx(10)
    clock.advance(9.99)
    assert not limiter.hit("k").allowed
    clock.advance(0.01)
    assert [limiter.hit("k").allowed for _ in range(4)] == [True, True, True, False]


def test_sliding_window_no_double_burst_at_edge():
    limiter, clock = make("10/minute", "sliding_window", start=60_000.0)
    clock.advance(54)  # late in the window
    assert sum(limiter.hit("k").allowed for _ in range(10)) == 10
    clock.advance(6)  # window edge: previous = 10, weight 1.0
    assert not limiter.hit("k").allowed
    clock.advance(15)  # 25% into the window: estimate 7.5
    assert sum(limiter.hit("k").allowed for _ in range(5)) == 2


def test_sliding_window_retry_after_solves_the_decay():
    limiter, clock = make("10/minute", "sliding_window", start=60_000.0)
    for _ in range(10):
        limiter.hit("k")
    clock.advance(60)  # previous window count 10, current 0
    for _ in range(3):
        clock.advance(6)
        limiter.hit("k")  # admitted as the previous count decays
    denied = limiter.hit("k")
    assert not denied.allowed and 0 < denied.retry_after < 60
    clock.advance(denied.retry_after - 0.01)
    assert not limiter.hit("k").allowed
    clock.advance(0.01)
    assert limiter.hit("k").allowed


def test_sliding_log_exact_window():
    limiter, clock = make("3/10s", "sliding_log")
    limiter.hit("k")
    clock.advance(4)
    limiter.hit("k")
    clock.advance(4)
    limiter.hit("k")
    denied = limiter.hit("k")
    assert not denied.allowed and denied.retry_after == pytest.approx(2)
    clock.advance(2)  # the first entry (t=0) leaves (now-10, now] at t=10
    assert limiter.hit("k").allowed
    assert not limiter.hit("k").allowed


def test_gcra_emission_interval():
    limiter, clock = make(Limit(10, per=1, burst=2), "gcra")
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    denied = limiter.hit("k")
    assert denied.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    assert limiter.hit("k").allowed
    assert not limiter.hit("k").allowed


def test_leaky_bucket_delays_space_requests_evenly():
    limiter, clock = make("5/second", "leaky_bucket")
    delays = [limiter.hit("k").delay for _ in range(5)]
    assert delays == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    denied = limiter.hit("k")
    assert not denied.allowed and denied.retry_after == pytest.approx(0.2)
    clock.advance(0.2)
    d = limiter.hit("k")
    assert d.allowed and d.delay == pytest.approx(0.8)


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a != "leaky_bucket"])
def test_delay_is_zero_except_leaky(algorithm):
    limiter, _ = make("5/second", algorithm)
    assert all(limiter.hit("k").delay == 0 for _ in range(5))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cost_larger_than_capacity_never_passes(algorithm):
    limiter, clock = make("5/second", algorithm)
    d = limiter.hit("k", cost=6)
    assert not d.allowed and math.isinf(d.retry_after)
    assert "Retry-After" not in d.headers()
    clock.advance(3600)
    assert not limiter.hit("k", cost=6).allowed
    assert limiter.hit("k", cost=5).allowed  # and it consumed nothing


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_retry_after_is_exact(algorithm):
    limiter, clock = make("4/2s", algorithm)
    while limiter.hit("k", cost=2).allowed:
        clock.advance(0.3)
    denied = limiter.hit("k", cost=2)
    assert 0 < denied.retry_after < math.inf
    clock.advance(denied.retry_after * 0.98)
    assert not limiter.peek("k", cost=2).allowed
    clock.advance(denied.retry_after * 0.02)
    assert limiter.hit("k", cost=2).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cost_zero_consumes_nothing(algorithm):
    limiter, _ = make("2/second", algorithm)
    assert limiter.hit("k", cost=0).allowed
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fractional_costs(algorithm):
    limiter, _ = make("2/second", algorithm)
    assert [limiter.hit("k", cost=0.5).allowed for _ in range(5)] == [True] * 4 + [False]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_clock_stepping_back_grants_nothing(algorithm):
    limiter, clock = make("3/minute", algorithm, start=1_000_030.0)
    for _ in range(3):
        assert limiter.hit("k").allowed
    clock.set(1_000_030.0 - 45)  # NTP steps the clock back 45 s
    assert not limiter.hit("k").allowed
    clock.set(1_000_030.0)
    assert not limiter.hit("k").allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_reset_after_reaches_full(algorithm):
    limiter, clock = make("4/2s", algorithm, start=1_000_000.0)
    d = limiter.hit("k")
    assert d.reset_after > 0
    clock.advance(d.reset_after)
    assert limiter.peek("k", cost=0).remaining == 4


# --------------------------------------------------------------------------- float noise

EPOCH = 1_700_000_000.123456  # today's Unix time: a float step of 2.4e-7 s


@pytest.mark.parametrize("start", [1_000_000.0, EPOCH])
@pytest.mark.parametrize(
    "limit",
    [Limit(1_000_000, per=1), Limit(1000, per=0.001), Limit(2_000_000, per=1)],
    ids=str,
)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_drained_limit_at_a_frozen_clock_admits_nothing_more(algorithm, limit, start):
    """The admission slack was 1 µs of refill: a whole unit at 10**6 per second, granted again
    on every hit once the clamp at zero forgot the debt (2000 of 2000 extra hits passed)."""
    limiter, _ = make(limit, algorithm, start=start)
    assert limiter.hit("k", cost=limit.capacity).allowed
    assert sum(limiter.hit("k").allowed for _ in range(2000)) == 0
    assert limiter.peek("k", cost=0).remaining == 0


@pytest.mark.parametrize("start", [1_000_000.0, EPOCH])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_unit_at_a_time_at_a_fast_rate_admits_exactly_the_capacity(algorithm, start):
    """GCRA's TAT at epoch times lost part of each 1 µs increment to rounding (TAT + 1e-6 rounds
    to 4 float steps of 2.4e-7 s): it admitted more than the burst."""
    limiter, _ = make(Limit(1000, per=0.001), algorithm, start=start)
    assert sum(limiter.hit("k").allowed for _ in range(3000)) == 1000


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_remaining_at_todays_unix_time(algorithm):
    """Two hits of Limit(5, per=1) at t=1700000040.0 reported remaining=2, yet a hit of cost 3
    passed: GCRA's TAT (and the leaky bucket's queue end) carry 2.4e-7 s of float noise."""
    limiter, _ = make(Limit(5, per=1), algorithm, start=1_700_000_040.0)
    limiter.hit("k")
    assert limiter.hit("k").remaining == 3
    assert limiter.peek("k", cost=0).remaining == 3
    assert not limiter.peek("k", cost=4).allowed
    assert limiter.hit("k", cost=3).allowed


@pytest.mark.parametrize("algorithm", ["gcra", "leaky_bucket"])
def test_gcra_reads_the_float_state_of_older_versions(algorithm):
    from ratekeeper.algorithms import ALGORITHMS as ALL

    meter = ALL[algorithm]
    limit = Limit(10, per=1)
    now = EPOCH
    pair, _ = meter.apply(None, now, 3, limit)
    assert isinstance(pair, tuple) and len(pair) == 2
    for cost in (2, 0, 6, 5):
        now += 0.01
        new_pair, from_pair = meter.apply(pair, now, cost, limit)
        _, from_float = meter.apply(sum(pair), now, cost, limit)
        assert (from_float.allowed, from_float.remaining) == (
            from_pair.allowed,
            from_pair.remaining,
        )
        pair = new_pair
