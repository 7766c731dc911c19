"""The chunked sliding log decides exactly like the plain log it replaced, across chunk edges,
expiry of whole and partial chunks, out-of-order timestamps (threads racing to the store's lock,
clocks stepping back) and fractional costs."""

from __future__ import annotations

import random
from operator import itemgetter
from typing import Any

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
                check_shape(ours, chunk)


def check_shape(state: tuple[Any, ...], chunk: int) -> None:
    """The log is sorted, its chunks small, the tail never empty, ``skip`` inside the first chunk,
    and ``total`` the sum of the live costs."""
    body, tail, skip, total = state
    assert tail and all(0 < len(part) <= 2 * chunk for part in body)
    assert 0 <= skip < len(body[0]) if body else skip == 0
    live = [entry for part in body for entry in part][skip:] + list(tail)
    times = [when for when, _ in live]
    assert times == sorted(times)
    if total is not None:
        assert total == sum(c for _, c in live)


def test_a_long_log_stays_in_small_chunks() -> None:
    algorithm = sliding_log.SlidingLog()
    limit = Limit(1_000_000, per=3600)
    state, now = None, 1_000_000.0
    for i in range(3 * sliding_log.CHUNK + 7):
        now += 0.001
        state, decision = algorithm.apply(state, now, 1, limit)
        assert decision.remaining == 1_000_000 - i - 1
    body, tail, skip, total = state
    assert [len(part) for part in body] == [sliding_log.CHUNK] * 3
    assert len(tail) == 7 and skip == 0
    assert total == 3 * sliding_log.CHUNK + 7
    state, decision = algorithm.apply(state, now + 3600, 1, limit)  # all expired
    assert decision.remaining == 1_000_000 - 1
    assert state == ((), ((now + 3600, 1),), 0, 1)


def long_log(entries: int, start: float = 1_000_000.0) -> tuple[Any, float]:
    """A log of ``entries`` admissions of cost 1, 1 ms apart, under 1,000,000/hour."""
    algorithm, limit = sliding_log.SlidingLog(), Limit(1_000_000, per=3600)
    state, now = None, start
    for _ in range(entries):
        now += 0.001
        state, _ = algorithm.apply(state, now, 1, limit)
    return state, now


def test_an_admission_copies_the_tail_not_the_log() -> None:
    """A long log does not make an admission longer: the body of older chunks is shared with the
    previous state, only the tail (at most CHUNK entries) is copied."""
    algorithm, limit = sliding_log.SlidingLog(), Limit(1_000_000, per=3600)
    state, now = long_log(20 * sliding_log.CHUNK + 5)
    new, decision = algorithm.apply(state, now + 0.001, 1, limit)
    assert decision.allowed and decision.remaining == 1_000_000 - 20 * sliding_log.CHUNK - 6
    assert new[0] is state[0]
    assert new[1] == (*state[1], (now + 0.001, 1))
    assert new[3] == state[3] + 1


def test_steady_expiry_moves_skip_without_copying_the_body() -> None:
    """Entries leaving the head of the window are skipped; a chunk leaves once all expired."""
    algorithm = sliding_log.SlidingLog()
    limit = Limit(1_000_000, per=3600)
    state, _ = long_log(3 * sliding_log.CHUNK + 5)
    body = state[0]
    first = body[0][0][0]
    # one hour after the first entry and half a millisecond: exactly one entry has left
    new, decision = algorithm.apply(state, first + 3600.0005, 0, limit)
    assert new[0] is body and new[2] == 1 and new[3] == state[3] - 1
    assert decision.remaining == 1_000_000 - (3 * sliding_log.CHUNK + 4)
    # the whole first chunk has left: it is dropped, the rest of the body kept
    last_of_first = body[0][-1][0]
    new, decision = algorithm.apply(new, last_of_first + 3600.0005, 0, limit)
    assert new[0] == body[1:] and new[2] == 0
    assert new[3] == 2 * sliding_log.CHUNK + 5
    check_shape(new, sliding_log.CHUNK)


def test_a_clock_stepping_back_before_skipped_entries() -> None:
    """An entry older than entries already expired by a later clock goes first; the expired ones
    stay gone (as they did when the log was cut at once)."""
    algorithm = sliding_log.SlidingLog()
    limit = Limit(1_000, per=100)
    ours: Any = None
    theirs: Entries | None = None
    now = 1_000_000.0
    # 3 chunks 0.5 s apart; 10 s later the head of the first chunk has left the window; then the
    # clock steps back before it, and again into the body, and forward past everything
    trace = [(0.5, 1)] * (3 * sliding_log.CHUNK) + [(10.0, 1), (-101.0, 2), (0.0, 1), (40.0, 3)]
    trace += [(-30.0, 1), (200.0, 1)]
    for advance, cost in trace:
        now += advance
        ours, got = algorithm.apply(ours, now, cost, limit)
        theirs, want = plain_log(theirs, now, cost, limit)
        assert view(got) == view(want)
        check_shape(ours, sliding_log.CHUNK)


def test_a_state_of_older_versions_is_read_as_its_log() -> None:
    """``(chunks, total)``, as older versions kept it (a CAS store may hold one), decides like
    the same log."""
    algorithm = sliding_log.SlidingLog()
    limit = Limit(5, per=10)
    entries = ((1_000_000.0, 1), (1_000_001.0, 2), (1_000_002.0, 0.5))
    older: Any = ((entries[:2], entries[2:]), None)
    for now, cost in [(1_000_003.0, 1), (1_000_003.0, 2), (1_000_010.5, 2), (1_000_012.0, 0)]:
        got = algorithm.apply(older, now, cost, limit)[1]
        want = plain_log(entries, now, cost, limit)[1]
        assert view(got) == view(want)
    charged = algorithm.charge(older, 1_000_003.0, 1, limit)
    assert charged == ((), (*entries, (1_000_003.0, 1)), 0, None)
    refunded = algorithm.refund(older, 1_000_003.0, 2, limit, 1_000_001.0)
    assert refunded == ((), (entries[0], entries[2]), 0, None)
