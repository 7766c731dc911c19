import random

import pytest

from ratekeeper import RateLimiter
from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.stores import store_from_url
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing import FakeClock


def test_url():
    assert isinstance(store_from_url("memory://"), MemoryStore)
    assert isinstance(RateLimiter("1/s", store="memory://").store, MemoryStore)


def test_a_million_one_off_keys_do_not_stay():
    store = MemoryStore()
    clock = FakeClock()
    limiter = RateLimiter("10/second", store=store, clock=clock)
    hit = limiter.hit
    for i in range(1_000_000):
        hit(f"visitor:{i}")
        clock.advance(0.0001)  # 100 s of traffic, 10,000 new keys a second
    # only keys written within the last two horizons (2 x 1 s) can remain
    assert len(store) <= 20_001


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_eviction_never_changes_a_decision(algorithm):
    """Against a reference that never forgets anything, over many eviction horizons."""
    rng = random.Random(algorithm)
    store = MemoryStore()
    clock = FakeClock()
    limiter = RateLimiter("5/10s", algorithm=algorithm, store=store, clock=clock)
    rule = limiter.rule
    remembered: dict[str, object] = {}
    for step in range(5000):
        clock.advance(rng.choice([0.0, 0.01, 0.1, 0.5, 2.0, 7.0]))
        key = f"k{rng.randrange(40)}"
        cost = rng.choice([1, 1, 2, 0.5])
        got = limiter.hit(key, cost)
        new, want = rule.algorithm.apply(remembered.get(key), clock(), cost, rule.limits[0])
        if want.allowed:
            remembered[key] = new
        assert (got.allowed, got.remaining) == (want.allowed, want.remaining), step
        assert got.retry_after == pytest.approx(want.retry_after)
    assert len(store) <= 40


def test_idle_keys_are_freed_by_later_activity():
    store = MemoryStore()
    clock = FakeClock()
    limiter = RateLimiter("100/second", store=store, clock=clock)
    for i in range(10_000):
        limiter.hit(f"k{i}")
    assert len(store) == 10_000
    clock.advance(5)
    limiter.hit("a")
    clock.advance(5)
    limiter.hit("b")
    assert len(store) <= 2


def test_close_empties():
    store = MemoryStore()
    RateLimiter("1/s", store=store).hit("k")
    store.close()
    assert len(store) == 0


class SteppingClock:
    """A wall clock that a test sets, with no monotonic companion: the store falls back to the
    real `time.monotonic`, as it does under `time.time` in production."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_clock_that_jumps_ahead_and_back_grants_nothing(algorithm):
    """Exhausted at T; other keys hit at T+61 and T+122 (a glitch); back to T+1: the exhausted
    key's state is still there, so it gets what the algorithm gives after 1 s, not a new budget."""
    t = 1_700_000_040.0
    clock = SteppingClock(t)
    store = MemoryStore()
    limiter = RateLimiter("5/minute", algorithm=algorithm, store=store, clock=clock)
    reference = RateLimiter("5/minute", algorithm=algorithm, store=MemoryStore(), clock=clock)
    while limiter.hit("exhausted"):
        reference.hit("exhausted")
    reference.hit("exhausted")
    for jump in (61, 122):
        clock.now = t + jump
        limiter.hit(f"other:{jump}")
    clock.now = t + 1
    got = [bool(limiter.hit("exhausted")) for _ in range(6)]
    want = [bool(reference.hit("exhausted")) for _ in range(6)]
    assert got == want
    assert got.count(True) <= 1


def test_a_long_quiet_spell_frees_everything_at_the_first_activity():
    """200,000 keys, an hour of silence, then new traffic: nothing of the old keys is held."""
    store = MemoryStore()
    clock = FakeClock()
    limiter = RateLimiter("100/minute", store=store, clock=clock)
    for i in range(200_000):
        limiter.hit(f"old:{i}")
    clock.advance(3600)
    for i in range(20_000):
        limiter.hit(f"new:{i}")
    assert len(store) == 20_000


def test_a_fake_clock_set_forward_does_not_evict():
    """`FakeClock.set` is a jump of the wall clock, not elapsed time."""
    store = MemoryStore()
    clock = FakeClock()
    limiter = RateLimiter("1/second", store=store, clock=clock)
    limiter.hit("k")
    clock.set(clock() + 10)
    limiter.hit("a")
    clock.set(clock() + 10)
    limiter.hit("b")
    assert len(store) == 3
    clock.advance(5)
    limiter.hit("c")
    clock.advance(5)
    limiter.hit("d")
    assert len(store) <= 2
