"""Leased local quota (``local_quota=``) on the memory store with a fake clock: batches, expiry,
refunds, the exact tail, costs above the batch, errors and configuration."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ratekeeper import AsyncRateLimiter, ConfigError, RateLimiter, Registry, StoreUnavailable
from ratekeeper.algorithms import Rule
from ratekeeper.algorithms.checks import HIT, REFUND, Check
from ratekeeper.config import load
from ratekeeper.decision import Decision
from ratekeeper.events import Event
from ratekeeper.stores.base import Applied
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing import FakeClock

HOUR = 3600.0
START = 1_000_000.0  # a multiple of neither an hour nor a day: windows start before it


class CountingStore(MemoryStore):
    """A memory store that records every apply_checks call as [(mode, cost), ...] (a hit as
    [(HIT, cost)]), and fails while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[tuple[int, float]]] = []
        self.down = False
        self.lock = threading.Lock()

    def apply_checks(self, checks: Sequence[Check], now: float, write: bool = True) -> Applied:
        if self.down:
            raise StoreUnavailable("store down (test)")
        with self.lock:
            self.calls.append([(check.mode, check.cost) for check in checks])
        return super().apply_checks(checks, now, write)

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        if self.down:
            raise StoreUnavailable("store down (test)")
        with self.lock:
            self.calls.append([(HIT, cost)])
        return super().hit(key, rule, cost, now)


def make(
    limits: str = "1000/hour", batch: int = 100, algorithm: str = "fixed_window", **options: Any
) -> tuple[RateLimiter, CountingStore, FakeClock]:
    clock = FakeClock(start=START)
    store = CountingStore()
    limiter = RateLimiter(
        limits, algorithm=algorithm, store=store, clock=clock, local_quota=batch, **options
    )
    return limiter, store, clock


def charged(limiter: RateLimiter, key: str = "k") -> int:
    """Units the store has charged for ``key`` (what a plain limiter on the store sees)."""
    plain = RateLimiter(
        limiter.limits, algorithm=limiter.algorithm, store=limiter.store, clock=limiter.clock
    )
    return limiter.limits[0].amount - plain.peek(key, cost=0).remaining


def test_one_store_operation_per_batch() -> None:
    limiter, store, _ = make()
    decisions = [limiter.hit("k") for _ in range(250)]
    assert all(decisions)
    assert store.calls == [[(HIT, 100.0)]] * 3  # 250 hits, three batches
    assert charged(limiter) == 300
    assert limiter.metrics().allowed == 250


def test_a_local_grant_reports_the_batch_and_the_store() -> None:
    limiter, _, clock = make()
    first = limiter.hit("k")
    # 99 left in the batch, 900 left at the store when it was taken
    assert (first.allowed, first.limit, first.remaining, first.retry_after) == (True, 1000, 999, 0)
    clock.advance(0.25)
    second = limiter.hit("k")
    assert second.remaining == 998
    assert second.reset_after == pytest.approx(first.reset_after - 0.25)


def test_a_batch_expires_after_the_ttl_and_its_unused_units_go_back_with_the_next_fetch() -> None:
    limiter, store, clock = make(local_quota_ttl=0.5)
    for _ in range(3):
        limiter.hit("k")
    clock.advance(0.499)
    assert limiter.hit("k")  # still the first batch
    assert len(store.calls) == 1
    clock.advance(0.001)
    assert limiter.hit("k")
    # one operation: the refund of the 96 unused units, then the new batch
    assert store.calls[1] == [(REFUND, 96.0), (HIT, 100.0)]
    assert charged(limiter) == 4 + 100


def test_the_first_units_are_never_over_admitted_across_limiters() -> None:
    """Two limiters (two processes) on one store: every unit is handed out once."""
    clock = FakeClock(start=START)
    store = MemoryStore()
    limiters = [
        RateLimiter("250/hour", algorithm="fixed_window", store=store, clock=clock, local_quota=100)
        for _ in range(2)
    ]
    allowed = 0
    for _ in range(400):
        for limiter in limiters:
            allowed += limiter.hit("k").allowed
    assert allowed == 250


def test_the_tail_of_the_budget_is_handed_out_exactly() -> None:
    limiter, store, _ = make("250/hour")
    decisions = [limiter.hit("k") for _ in range(260)]
    assert sum(d.allowed for d in decisions) == 250
    assert all(decisions[:250]) and not any(decisions[250:])
    # two batches, the full third one denied, then the 50 that remained
    assert [call[-1] for call in store.calls[:4]] == [(HIT, 100.0)] * 3 + [(HIT, 50.0)]
    assert charged(limiter) == 250


def test_a_denial_is_the_requests_own_with_its_retry_after() -> None:
    limiter, store, clock = make("100/hour", algorithm="token_bucket")
    assert all(limiter.hit("k") for _ in range(100))
    denial = limiter.hit("k")
    assert not denial.allowed and denial.remaining == 0
    # a full batch would take an hour to refill; one unit takes 36 s
    assert denial.retry_after == pytest.approx(36.0)
    assert store.calls[-2:] == [[(HIT, 100.0)], [(HIT, 1.0)]]
    clock.advance(denial.retry_after)
    assert limiter.hit("k")


def test_a_cost_above_the_batch_takes_a_batch_of_its_cost() -> None:
    limiter, store, _ = make()
    assert limiter.hit("k", cost=150)
    assert store.calls == [[(HIT, 150.0)]]
    assert limiter._quota is not None and limiter._quota.held("k") == 0
    assert charged(limiter) == 150


def test_a_cost_larger_than_what_is_left_fetches_and_refunds_the_rest() -> None:
    limiter, store, _ = make()
    for _ in range(97):
        limiter.hit("k")  # 3 left in the batch
    assert limiter.hit("k", cost=5)
    assert store.calls[1] == [(HIT, 100.0)]
    assert limiter.hit("k", cost=2)
    assert charged(limiter) == 200  # the old 3 are queued as a refund, not lost
    limiter.close()
    assert charged(limiter) == 97 + 5 + 2


def test_a_fixed_window_batch_ends_with_its_window() -> None:
    limiter, store, clock = make("1000/hour")
    window_end = (START // HOUR + 1) * HOUR
    clock.set(window_end - 0.25)
    assert limiter.hit("k")
    clock.set(window_end)
    assert limiter.hit("k")
    # the new window's batch; nothing refunded into a window that no longer counts
    assert store.calls == [[(HIT, 100.0)], [(HIT, 100.0)]]
    assert charged(limiter) == 100


def test_close_gives_the_unused_units_back() -> None:
    limiter, _, _ = make("1000/hour", algorithm="token_bucket")
    for _ in range(10):
        limiter.hit("k")
    limiter.close()
    assert charged(limiter) == 10


def test_reset_drops_the_local_batch() -> None:
    limiter, store, _ = make("100/hour")
    assert all(limiter.hit("k") for _ in range(100))
    assert not limiter.hit("k")
    limiter.reset("k")
    assert limiter.hit("k") and len(store.calls[-1]) == 1


def test_a_clock_stepping_back_retires_the_batch() -> None:
    limiter, store, clock = make()
    limiter.hit("k")
    clock.set(START - 10)
    assert limiter.hit("k")
    assert store.calls[-1][-1] == (HIT, 100.0) and len(store.calls) == 2


def test_peek_asks_the_store_and_does_not_count_local_units() -> None:
    limiter, _, _ = make()
    limiter.hit("k")
    assert limiter.peek("k").remaining == 1000 - 100 - 1


def test_local_grants_count_and_reach_observers() -> None:
    events: list[Event] = []

    class Recorder:
        def observe(self, event: Event) -> None:
            events.append(event)

    limiter, _, _ = make("150/hour", observers=[Recorder()])
    for _ in range(151):
        limiter.hit("k")
    metrics = limiter.metrics()
    assert (metrics.allowed, metrics.denied) == (150, 1)
    assert [e.result for e in events] == ["allowed"] * 150 + ["denied"]


def test_the_over_limit_cache_answers_repeated_denials() -> None:
    limiter, store, _ = make("100/hour", algorithm="token_bucket", local_cache=True)
    for _ in range(100):
        limiter.hit("k")
    assert not limiter.hit("k")
    calls = len(store.calls)
    assert not any(limiter.hit("k") for _ in range(10))
    assert len(store.calls) == calls


@pytest.mark.parametrize("policy", ["allow", "deny", "raise"])
def test_a_store_outage_during_a_fetch_follows_on_store_error(policy: str) -> None:
    limiter, store, clock = make(local_quota_ttl=0.5, on_store_error=policy)
    limiter.hit("k")
    clock.advance(1.0)  # the batch expires: its refund waits for the next fetch
    store.down = True
    if policy == "raise":
        with pytest.raises(StoreUnavailable):
            limiter.hit("k")
    else:
        decision = limiter.hit("k")
        assert decision.fallback and decision.allowed == (policy == "allow")
    assert limiter.metrics().store_errors == 1
    store.down = False
    assert limiter.hit("k")
    assert store.calls[-1] == [(REFUND, 99.0), (HIT, 100.0)]  # the refund was kept


def test_waiting_callers_share_one_fetch() -> None:
    """Four threads miss at once: one fetches, the others wait for its batch."""
    clock = FakeClock(start=START)
    entered, release = threading.Event(), threading.Event()

    class SlowStore(CountingStore):
        def apply_checks(self, checks: Sequence[Check], now: float, write: bool = True) -> Applied:
            entered.set()
            assert release.wait(5)
            return super().apply_checks(checks, now, write)

    store = SlowStore()
    limiter = RateLimiter(
        "1000/hour", algorithm="fixed_window", store=store, clock=clock, local_quota=100
    )
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(limiter.hit("k").allowed)) for _ in range(4)
    ]
    threads[0].start()
    assert entered.wait(5)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert results == [True] * 4
    assert store.calls == [[(HIT, 100.0)]]


def test_threads_admit_exactly_the_limit() -> None:
    limiter = RateLimiter("1000/day", store=MemoryStore(), local_quota=64)
    counts = [0] * 8

    def run(i: int) -> None:
        while limiter.hit("k"):
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 1000


def test_asyncio_tasks_admit_exactly_the_limit() -> None:
    async def main() -> tuple[int, int]:
        clock = FakeClock(start=START)
        limiter = AsyncRateLimiter("250/hour", clock=clock, local_quota=100)

        async def run() -> int:
            count = 0
            while await limiter.hit("k"):
                count += 1
                await asyncio.sleep(0)
            return count

        counts = await asyncio.gather(*(run() for _ in range(10)))
        left = (await limiter.peek("k", cost=0)).remaining
        await limiter.close()
        return sum(counts), left

    assert asyncio.run(main()) == (250, 0)


def test_batches_are_bounded() -> None:
    limiter, store, _ = make()
    assert limiter._quota is not None
    limiter._quota.max_keys = 2
    for key in ("a", "b", "c"):
        limiter.hit(key)
    assert len(limiter._quota) == 2
    limiter.hit("d")
    assert store.calls[-1] == [(REFUND, 99.0), (HIT, 100.0)]  # "a" was retired, then "b"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"local_quota": 0}, "local_quota must be None or a positive number"),
        ({"local_quota": -5}, "local_quota must be None or a positive number"),
        ({"local_quota": True}, "local_quota must be None or a positive number"),
        ({"local_quota": 2**53 + 1}, "at most 2\\*\\*53, got 9007199254740993"),
        ({"local_quota": 10**5000}, "at most 2\\*\\*53, got a number over 2\\*\\*64"),
        ({"local_quota": 2.5}, "local_quota must be None or a positive number"),
        ({"local_quota": 10, "local_quota_ttl": 0}, "local_quota_ttl must be a positive"),
        ({"local_quota": 10, "local_quota_ttl": -1.0}, "local_quota_ttl must be a positive"),
        ({"local_quota": 10, "local_quota_ttl": float("nan")}, "local_quota_ttl must be"),
        ({"local_quota": 10, "local_quota_ttl": float("inf")}, "local_quota_ttl must be"),
        ({"local_quota": 10, "local_quota_ttl": "1s"}, "local_quota_ttl must be"),
        ({"local_quota": 10, "max_concurrent": 2}, "cannot be combined with max_concurrent"),
        ({"local_quota": 10, "shadow": True}, "cannot be combined with shadow"),
        ({"local_quota": 10, "shadow_limits": "5/hour"}, "cannot be combined with shadow_limits"),
        ({"local_quota": 10, "priorities": {"batch": 0.5}}, "cannot be combined with priorities"),
        ({"local_quota": 10, "algorithm": "leaky_bucket"}, "algorithm='leaky_bucket'"),
    ],
)
def test_bad_settings_are_config_errors_at_construction(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RateLimiter("10/second", **options)
    with pytest.raises(ConfigError, match=message):
        AsyncRateLimiter("10/second", **options)


def test_the_registry_and_config_files_pass_the_fields_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(discover=False)
    registry.configure_limiter("api", "1000/hour", local_quota=50, local_quota_ttl=0.5)
    limiter = registry.get_limiter("api")
    limiter.hit("k")
    assert limiter.peek("k", cost=0).remaining == 950
    path = tmp_path / "ratekeeper.toml"
    path.write_text('[limiters.api]\nlimits = "1/s"\nlocal_quota = 20\nlocal_quota_ttl = 2.5\n')
    assert load(path).limiters["api"].options == {"local_quota": 20, "local_quota_ttl": 2.5}
    monkeypatch.setenv("RATEKEEPER_LIMITERS__API__LOCAL_QUOTA", "30")
    assert load(path).limiters["api"].options["local_quota"] == 30
    monkeypatch.setenv("RATEKEEPER_LIMITERS__API__LOCAL_QUOTA", "0")
    with pytest.raises(ConfigError, match=r"\[limiters.api\] field 'local_quota' must be > 0"):
        load(path)
    monkeypatch.delenv("RATEKEEPER_LIMITERS__API__LOCAL_QUOTA")
    path.write_text('[limiters.api]\nlimits = "1/s"\nlocal_quota = 5\nlocal_quota_ttl = 0\n')
    with pytest.raises(ConfigError, match=r"field 'local_quota_ttl' must be > 0"):
        load(path)
