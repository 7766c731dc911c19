"""Sliding log: the exact sum of costs in ``(now - P, now]``; a hit passes iff
``sum + cost <= amount`` (within :data:`~ratekeeper.algorithms.base.EPS_UNITS`).

State: ``(body, tail, skip, total)``, the log of ``(time, cost)`` entries oldest first, kept so that
an admission does not pay for the length of the log (the memory store runs it under its lock, and a
long log on one hot key must not make every thread wait longer):

- ``tail``, the newest entries, never empty: an admission copies it plus the new entry, at most
  ``CHUNK`` pointers;
- ``body``, a tuple of chunks of older entries: when the tail is full it becomes the body's last
  chunk, so the body is copied once per ``CHUNK`` admissions (``n / CHUNK**2`` pointers per
  admission on average for a log of n entries, not ``n / CHUNK``);
- ``skip``, how many entries at the head of ``body[0]`` have left the window: steady traffic expires
  about one entry per admission, which only moves ``skip``; a chunk leaves the body once it is all
  expired;
- ``total``, the sum of the live costs while every cost is a whole number (then it is exact, equal
  to summing the entries), else ``None`` and the sum is taken entry by entry, oldest first.

The log stays sorted by time: an entry older than the newest (threads racing to the store's lock,
a clock stepping back) is inserted in its place. Older versions kept ``(chunks, total)``; such a
state (a CAS store may hold one) is read as that log.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from itertools import chain, islice
from operator import itemgetter

from ratekeeper.algorithms.base import EPS_TIME, EPS_UNITS, INF, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit

# Entries per chunk: an admission copies at most this many pointers (the tail), and the body once
# every CHUNK admissions.
CHUNK = 64

Entry = tuple[float, float]
Chunk = tuple[Entry, ...]
Body = tuple[Chunk, ...]
Log = tuple[Body, Chunk, int, float | None]  # (body, tail, skip, total)

_time = itemgetter(0)
_EMPTY: Log = ((), (), 0, 0)


class SlidingLog(Algorithm):
    name = "sliding_log"

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        per = limit.per
        amount = limit.amount
        cutoff = now + EPS_TIME - per  # entries at or before the cutoff have left the window
        body: Body
        tail: Chunk
        skip: int
        total: float | None
        if state is None:
            body, tail, skip, total = _EMPTY
        else:
            try:
                body, tail, skip, total = state
            except ValueError:  # the (chunks, total) of older versions
                body, tail, skip, total = _upgraded(state)
            if (body[0][skip] if body else tail[0])[0] <= cutoff:
                body, tail, skip, total = _expire(body, tail, skip, total, cutoff)
        used = total if total is not None else sum(entry[1] for entry in _entries(body, tail, skip))
        available = amount - used + EPS_UNITS
        if cost <= available or not cost:
            if cost:
                entry = (now, cost)
                if not tail:
                    tail = (entry,)
                elif now < tail[-1][0]:  # threads racing to the lock, or a clock stepping back
                    body, tail, skip = _insert(body, tail, skip, entry)
                elif len(tail) < CHUNK:
                    tail += (entry,)
                else:
                    body += (tail,)
                    tail = (entry,)
                if total is not None and (type(cost) is int or float(cost).is_integer()):
                    total += cost
                else:
                    total = None
            left = amount - (used + cost) + EPS_UNITS  # what the next admission sees
            remaining = int(left) if left > 0.0 else 0
            if not tail:
                return None, Decision(True, amount, remaining, 0.0, 0.0, 0.0, limit)
            reset = tail[-1][0] + per - now
            return (body, tail, skip, total), Decision(
                True, amount, remaining, reset, 0.0, 0.0, limit
            )
        if cost > amount:
            retry = INF
        else:
            freed = used + cost - amount  # this much must leave the window first
            retry = 0.0
            for when, spent in _entries(body, tail, skip):
                freed -= spent
                if freed <= EPS_UNITS:
                    retry = when + per - now
                    break
        reset = tail[-1][0] + per - now if tail else 0.0
        return state, Decision(
            False,
            amount,
            int(available) if available > 0.0 else 0,
            reset,
            retry if retry > 0.0 else 0.0,
            0.0,
            limit,
        )

    def horizon(self, limit: Limit) -> float:
        return limit.per

    def size(self, limit: Limit) -> float:
        return float(limit.amount)

    def charge(self, state: State, now: float, cost: float, limit: Limit) -> State:
        entries = _listed(state)
        cutoff = now + EPS_TIME - limit.per
        entries = [entry for entry in entries if entry[0] > cutoff]
        if cost:
            entries.insert(bisect_right(entries, now, key=_time), (now, cost))
        return _pack(entries)

    def refund(self, state: State, now: float, amount: float, limit: Limit, at: float) -> State:
        if state is None:
            return None
        entries = _listed(state)
        # the latest entry charged at `at` (an expired one has left the log: nothing to give)
        for i in range(len(entries) - 1, -1, -1):
            when, spent = entries[i]
            if when == at:
                left = spent - amount
                if left > 0.0:
                    entries[i] = (when, left)
                else:
                    del entries[i]
                return _pack(entries)
            if when < at:
                break
        return state


def _entries(body: Body, tail: Chunk, skip: int) -> Iterator[Entry]:
    """Every live entry, oldest first."""
    return chain(islice(chain.from_iterable(body), skip, None), tail)


def _listed(state: State) -> list[Entry]:
    """The live entries of a state, oldest first, as a new list."""
    if state is None:
        return []
    if len(state) == 2:  # the (chunks, total) of older versions
        state = _upgraded(state)
    body, tail, skip, _ = state
    return list(_entries(body, tail, skip))


def _upgraded(state: tuple[Body, float | None]) -> Log:
    """The log of an older version's ``(chunks, total)`` (chunks oldest first, never empty)."""
    chunks, total = state
    return tuple(chunks[:-1]), chunks[-1], 0, total


def _expire(body: Body, tail: Chunk, skip: int, total: float | None, cutoff: float) -> Log:
    """Drop the entries at or before ``cutoff`` (the log is sorted by time); an empty tail when
    none is left."""
    gone: list[Entry] = []  # oldest first
    whole = 0
    while whole < len(body) and body[whole][-1][0] <= cutoff:
        whole += 1
    if whole:
        gone.extend(islice(chain.from_iterable(body[:whole]), skip, None))
        body, skip = body[whole:], 0
    if body:
        first = body[0]
        cut = bisect_right(first, cutoff, lo=skip, key=_time)
        gone.extend(first[skip:cut])
        skip = cut
    else:
        cut = bisect_right(tail, cutoff, key=_time)
        gone.extend(tail[:cut])
        tail = tail[cut:]
        if not tail:
            return _EMPTY
    if total is not None:
        total -= sum(entry[1] for entry in gone)
    return body, tail, skip, total


def _pack(entries: list[Entry]) -> State:
    """The state of a sorted list of entries (``None`` when empty)."""
    if not entries:
        return None
    last = (len(entries) - 1) // CHUNK * CHUNK  # the tail: the last 1..CHUNK entries
    body = tuple(tuple(entries[i : i + CHUNK]) for i in range(0, last, CHUNK))
    costs = [spent for _, spent in entries]
    whole = all(type(c) is int or float(c).is_integer() for c in costs)
    return body, tuple(entries[last:]), 0, (sum(costs) if whole else None)


def _insert(body: Body, tail: Chunk, skip: int, entry: Entry) -> tuple[Body, Chunk, int]:
    """Insert an entry older than the newest one where it belongs (usually the tail)."""
    when = entry[0]
    if not body or when >= tail[0][0]:
        at = bisect_right(tail, when, key=_time)
        grown = (*tail[:at], entry, *tail[at:])
        if len(grown) > CHUNK:  # a full chunk moves to the body, as an append would move it
            return (*body, grown[:CHUNK]), grown[CHUNK:], skip
        return body, grown, skip
    if skip:  # the expired head goes first: the entry may be older than it (a clock stepping back)
        body, skip = (body[0][skip:], *body[1:]), 0
    i = len(body) - 1
    while i > 0 and when < body[i][0][0]:
        i -= 1
    chunk = body[i]
    at = bisect_right(chunk, when, key=_time)
    grown = (*chunk[:at], entry, *chunk[at:])
    parts = (grown,) if len(grown) <= 2 * CHUNK else (grown[:CHUNK], grown[CHUNK:])
    return (*body[:i], *parts, *body[i + 1 :]), tail, skip
