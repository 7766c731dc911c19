"""The chunked sliding log decides exactly like the plain log it replaced, across chunk edges,
expiry of whole and partial chunks, out-of-order timestamps (threads racing to the store's lock,
clocks stepping back) and fractional costs."""

from __future__ import annotations

import random
from operator import itemgetter

import pytest

import ratekeeper.algorithms.sliding_log as sliding_log
from ratekeeper import Decision, Limit
from ratekeeper.algorithms.base import EPS_TIME, EPS_UNITS, INF

Entries = tuple[tuple[float, float], ...]


def plain_log(
    state: Entries | None, now: float, cost: float, limit: Limit
) -> tuple[Entries | None, Decision]:
    """The reference: one flat tuple of (time, cost), summed oldest first on every request (the
    order matters only for costs like 0.1 whose float sums depend on it)."""
    per, amount = limit.per, limit.amount
    cutoff = now + EPS_TIME - per
    entries = tuple(e for e in state if e[0] > cutoff) if state else ()
    used = sum(e[1] for e in sorted(entries, key=itemgetter(0)))
    if cost <= amount - used + EPS_UNITS or not cost:
        if cost:
            entries += ((now, cost),)
        reset = max(e[0] for e in entries) + per - now if entries else 0.0
        remaining = max(int(amount - (used + cost) + EPS_UNITS), 0)
        return entries or None, Decision(True, amount, remaining, reset, 0.0, 0.0, limit)
    if cost > amount:
        retry = INF
    else:
        freed, retry = used + cost - amount, 0.0
        for when, spent in sorted(entries):
            freed -= spent
            if freed <= EPS_UNITS:
                retry = when + per - now
                break
    reset = max(e[0] for e in entries) + per - now if entries else 0.0
    remaining = max(int(amount - used + EPS_UNITS), 0)
    return state, Decision(False, amount, remaining, reset, max(retry, 0.0), 0.0, limit)


def view(d: Decision) -> tuple[object, ...]:
    return (d.allowed, d.limit, d.remaining, d.reset_after, d.retry_after, d.delay)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_same_decisions_as_the_plain_log(
    monkeypatch: pytest.MonkeyPatch, chunk: int, seed: int
) -> None:
    monkeypatch.setattr(sliding_log, "CHUNK", chunk)
    algorithm = sliding_log.SlidingLog()
    rng = random.Random(seed)
    for _ in range(50):
        limit = Limit(rng.choice([1, 3, 10, 40]), per=rng.choice([1.0, 2.5, 10.0]))
        ours, theirs = None, None
        now = 1_000_000.0
        for _ in range(rng.randrange(1, 120)):
            if rng.random() < 0.1:
                now -= rng.random() * 3  # out of order
            else:
                now += rng.choice([0.0, 0.001, 0.1, 0.3, 1.0, 2.5, 5.0])
            cost = rng.choice([1, 1, 2, 0, 0.5, 3, 1.5, 0.1, 7, 60])
            ours, got = algorithm.apply(ours, now, cost, limit)
            theirs, want = plain_log(theirs, now, cost, limit)
            assert view(got) == view(want)
            if ours is not None:
                chunks, total = ours
                times = [when for part in chunks for when, _ in part]
                assert times == sorted(times)
                assert all(0 < len(part) <= 2 * chunk for part in chunks)
                if total is not None:
                    assert total == sum(c for part in chunks for _, c in part)


def test_a_long_log_stays_in_small_chunks() -> None:
    algorithm = sliding_log.SlidingLog()
    limit = Limit(1_000_000, per=3600)
    state, now = None, 1_000_000.0
    for i in range(3 * sliding_log.CHUNK + 7):
        now += 0.001
        state, decision = algorithm.apply(state, now, 1, limit)
        assert decision.remaining == 1_000_000 - i - 1
    chunks, total = state
    assert [len(part) for part in chunks] == [sliding_log.CHUNK] * 3 + [7]
    assert total == 3 * sliding_log.CHUNK + 7
    state, decision = algorithm.apply(state, now + 3600, 1, limit)  # all expired
    assert decision.remaining == 1_000_000 - 1
    assert state[1] == 1 and len(state[0]) == 1
