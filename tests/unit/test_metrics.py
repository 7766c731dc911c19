"""`limiter.metrics()`: exact counts of what a limiter did, across threads."""

from __future__ import annotations

import threading

import pytest

from ratekeeper import AsyncRateLimiter, RateLimiter, RateLimitTimeout, StoreUnavailable
from ratekeeper.decision import Decision
from ratekeeper.metrics import LimiterMetrics
from ratekeeper.stores.base import Rule
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing import FakeClock


class DownStore(MemoryStore):
    """A store whose server is gone: every decision raises StoreUnavailable."""

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        raise StoreUnavailable("store down")


def test_name_defaults_to_the_limits_and_can_be_set() -> None:
    assert RateLimiter("5/second;100/hour").name == "5/1s; 100/3600s"
    assert RateLimiter("5/second", name="api").metrics().name == "api"
    with pytest.raises(ValueError, match="name"):
        RateLimiter("5/second", name="")


def test_hits_are_counted_exactly_across_threads() -> None:
    clock = FakeClock()
    limiter = RateLimiter("1000/hour", clock=clock)

    def work() -> None:
        for i in range(500):
            limiter.hit(f"k{i % 3}")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limiter.peek("k0")  # a peek is not a decision
    metrics = limiter.metrics()
    assert metrics.allowed == 3000  # three keys, 1000 each
    assert metrics.denied == 8 * 500 - 3000
    assert (metrics.store_errors, metrics.acquisitions, metrics.in_flight) == (0, 0, 0)


@pytest.mark.parametrize("policy", ["allow", "deny", "raise"])
def test_store_errors_are_counted_under_every_policy(policy: str) -> None:
    limiter = RateLimiter("5/second", store=DownStore(), on_store_error=policy)  # type: ignore[arg-type]
    for _ in range(3):
        try:
            limiter.hit("k")
        except StoreUnavailable:
            assert policy == "raise"
    metrics = limiter.metrics()
    assert metrics.store_errors == 3
    # a fallback is a store error, not a decision of the limits (Prometheus: result="error")
    assert (metrics.allowed, metrics.denied) == (0, 0)


def test_acquire_counts_waits_timeouts_and_slots() -> None:
    clock = FakeClock()
    limiter = RateLimiter("2/second", clock=clock, max_concurrent=2)
    with limiter.acquire("job"), limiter.acquire("job"):
        assert limiter.metrics().in_flight == 2
        with pytest.raises(RateLimitTimeout):
            limiter.acquire("job", timeout=0.05)
    assert limiter.metrics().in_flight == 0
    limiter.acquire("job").release()  # the bucket refills 0.5 s after the hits; 0.05 s went by
    metrics = limiter.metrics()
    assert metrics.acquisitions == 3 and metrics.timeouts == 1
    assert metrics.wait_seconds_max == pytest.approx(0.45)
    assert metrics.wait_seconds_total == pytest.approx(0.05 + 0.45)
    assert metrics.in_flight == 0


async def test_async_limiter_counts_the_same_way() -> None:
    clock = FakeClock()
    limiter = AsyncRateLimiter("2/second", clock=clock, max_concurrent=1)
    assert await limiter.hit("k") and await limiter.hit("k") and not await limiter.hit("k")
    async with limiter.acquire("job"):
        assert limiter.metrics().in_flight == 1
    metrics = limiter.metrics()
    assert (metrics.allowed, metrics.denied, metrics.acquisitions, metrics.in_flight) == (
        3,
        1,
        1,
        0,
    )
    assert isinstance(metrics, LimiterMetrics)
    assert metrics.as_dict()["allowed"] == 3
