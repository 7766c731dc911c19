"""Observers, shadow mode and candidate limits on the limiter (memory store, fake clock)."""

from __future__ import annotations

import logging
import threading

import pytest

from ratekeeper import AsyncRateLimiter, ConfigError, RateLimiter, RateLimitTimeout
from ratekeeper.events import Event
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing import FakeClock


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def observe(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def results(self, kind: str = "hit") -> list[str]:
        return [e.result for e in self.events if e.kind == kind]


class Broken:
    def observe(self, event: Event) -> None:
        raise RuntimeError("observer bug")


def test_one_event_per_decision_with_what_observers_need() -> None:
    recorder = Recorder()
    limiter = RateLimiter("2/minute", name="api", observers=[recorder], clock=FakeClock())
    for _ in range(3):
        limiter.hit("user:1")
    limiter.peek("user:1")  # not a decision
    assert recorder.results() == ["allowed", "allowed", "denied"]
    event = recorder.events[-1]
    assert (event.limiter, event.algorithm, event.store, event.key) == (
        "api",
        "token_bucket",
        "memory",
        "user:1",
    )
    assert event.decision is not None and not event.decision.allowed
    assert event.store_seconds >= 0 and event.time > 0


def test_an_observer_that_raises_never_breaks_a_request(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    limiter = RateLimiter("5/minute", observers=[Broken(), recorder])
    with caplog.at_level(logging.ERROR, logger="ratekeeper"):
        assert limiter.hit("k") and limiter.hit("k")
    assert recorder.results() == ["allowed", "allowed"]
    assert sum("observer" in r.message for r in caplog.records) == 1  # logged once, not per hit


def test_observers_can_be_added_later_and_are_checked() -> None:
    limiter = RateLimiter("5/minute")
    assert limiter.plain
    recorder = Recorder()
    limiter.add_observer(recorder)
    assert not limiter.plain
    limiter.hit("k")
    assert recorder.results() == ["allowed"]
    with pytest.raises(ConfigError, match="observe"):
        RateLimiter("5/minute", observers=[object()])  # type: ignore[list-item]


def test_shadow_mode_never_denies_counts_and_consumes_like_enforcing() -> None:
    clock = FakeClock()
    recorder = Recorder()
    shadow = RateLimiter("3/minute", shadow=True, clock=clock, observers=[recorder])
    enforcing = RateLimiter("3/minute", clock=clock)
    got = [shadow.hit("k") for _ in range(5)]
    want = [enforcing.hit("k") for _ in range(5)]
    assert all(got)
    assert [d.remaining for d in got] == [d.remaining for d in want]
    assert all(d.retry_after == 0 and "Retry-After" not in d.headers() for d in got)
    assert recorder.results() == ["allowed"] * 3 + ["shadow_denied"] * 2
    assert shadow.peek("k").allowed
    assert shadow.enforce("k")  # never raises
    metrics = shadow.metrics()
    assert (metrics.allowed, metrics.denied, metrics.shadow_denied) == (3, 0, 3)
    clock.advance(20)  # one token back: consumed as usual when it passes
    assert shadow.hit("k").remaining == 0 and enforcing.hit("k").remaining == 0


def test_candidate_limits_are_evaluated_on_their_own_state_and_never_deny() -> None:
    clock = FakeClock()
    store = MemoryStore()
    recorder = Recorder()
    limiter = RateLimiter(
        "5/minute", shadow_limits="2/minute", store=store, clock=clock, observers=[recorder]
    )
    other = RateLimiter("2/minute", store=store, clock=clock)  # same limit, enforced elsewhere
    assert [bool(limiter.hit("k")) for _ in range(6)] == [True] * 5 + [False]
    assert recorder.results() == ["allowed"] * 2 + ["shadow_denied"] * 3 + ["denied"]
    assert other.hit("k")  # the candidate's state is its own, not this limit's
    assert limiter.metrics().shadow_denied == 3


def test_acquire_timeout_and_release_events() -> None:
    clock = FakeClock()
    recorder = Recorder()
    limiter = RateLimiter("1/second", clock=clock, max_concurrent=1, observers=[recorder])
    with limiter.acquire("job"), pytest.raises(RateLimitTimeout):
        limiter.acquire("job", timeout=0.01)
    kinds = [(e.kind, e.in_flight) for e in recorder.events if e.kind != "hit"]
    assert kinds == [("acquire", 1), ("timeout", 1), ("release", 0)]
    waits = [e.wait_seconds for e in recorder.events if e.kind == "timeout"]
    assert waits == [pytest.approx(0.01)]


async def test_async_limiter_emits_the_same_events() -> None:
    recorder = Recorder()
    limiter = AsyncRateLimiter("1/minute", shadow_limits="1/hour", observers=[recorder])
    assert await limiter.hit("k")
    assert not await limiter.hit("k")
    assert recorder.results() == ["allowed", "denied"]


def test_exact_counts_under_threads_with_an_observer() -> None:
    recorder = Recorder()
    limiter = RateLimiter("1000/hour", observers=[recorder], clock=FakeClock())

    def work() -> None:
        for _ in range(400):
            limiter.hit("k")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recorder.results().count("allowed") == 1000
    assert recorder.results().count("denied") == 3200 - 1000
    metrics = limiter.metrics()
    assert (metrics.allowed, metrics.denied) == (1000, 2200)


def test_registry_observers_reach_present_and_future_limiters() -> None:
    from ratekeeper import Registry

    registry = Registry(discover=False)
    registry.configure_limiter("api", "2/minute")
    before = registry.get_limiter("api")
    recorder = Recorder()
    registry.observe(recorder)
    registry.observe(recorder)  # once is enough
    registry.configure_limiter("jobs", "1/minute")
    after = registry.get_async_limiter("jobs")
    cached = registry.limiter(registry.store(), before.limits, asynchronous=False)
    before.hit("k")
    cached.hit("k")  # type: ignore[union-attr]
    assert [e.limiter for e in recorder.events] == ["api", "2/60s"]
    assert recorder in after._observers


def test_shadow_mode_never_denies_even_when_the_store_is_down() -> None:
    from ratekeeper import StoreUnavailable
    from ratekeeper.stores.base import Rule

    class Down(MemoryStore):
        def hit(self, key: str, rule: Rule, cost: float, now: float):  # type: ignore[no-untyped-def]
            raise StoreUnavailable("down")

    limiter = RateLimiter("1/minute", store=Down(), shadow=True, on_store_error="deny")
    decision = limiter.hit("k")
    assert decision.allowed and decision.fallback
    assert limiter.metrics().store_errors == 1
