"""Sliding log: the exact sum of costs in ``(now - P, now]``; a hit passes iff
``sum + cost <= amount`` (within :data:`~ratekeeper.algorithms.base.EPS_UNITS`).

State: ``(chunks, total)``. ``chunks`` is the log, oldest first, as a tuple of chunks of at most
``CHUNK`` ``(time, cost)`` entries, so that admitting a request copies one small chunk and the
short tuple of chunks instead of the whole log (a log of n entries costs about n / CHUNK + CHUNK
pointer copies per admission, not n). ``total`` is the sum of the costs while every cost is a
whole number (then it is exact, equal to summing the entries), else ``None`` and the sum is taken
entry by entry, oldest first. The log stays sorted by time: an entry older than the newest (threads
racing to the store's lock, a clock stepping back) is inserted in its place. Entries leave the log
when they expire, chunk by chunk.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import chain
from operator import itemgetter

from ratekeeper.algorithms.base import EPS_TIME, EPS_UNITS, INF, Algorithm, State
from ratekeeper.decision import Decision
from ratekeeper.limits import Limit

CHUNK = 256

Entry = tuple[float, float]
Chunks = tuple[tuple[Entry, ...], ...]

_time = itemgetter(0)


class SlidingLog(Algorithm):
    name = "sliding_log"

    def apply(self, state: State, now: float, cost: float, limit: Limit) -> tuple[State, Decision]:
        per = limit.per
        amount = limit.amount
        cutoff = now + EPS_TIME - per  # entries at or before the cutoff have left the window
        chunks: Chunks
        total: float | None
        if state is None:
            chunks, total = (), 0
        else:
            chunks, total = state
            if chunks[0][0][0] <= cutoff:
                chunks, total = _expire(chunks, total, cutoff)
        used = total if total is not None else sum(entry[1] for entry in _entries(chunks))
        available = amount - used + EPS_UNITS
        if cost <= available or not cost:
            if cost:
                # Append (now, cost), inlined: one small chunk and the tuple of chunks copied.
                # Concatenation, not `(*last, entry)`: one C-level copy, where unpacking builds a
                # list first.
                entry = (now, cost)
                if not chunks:
                    chunks = ((entry,),)
                else:
                    last = chunks[-1]
                    if now < last[-1][0]:  # threads racing to the lock, or a clock stepping back
                        chunks = _insert(chunks, entry)
                    elif len(last) < CHUNK:
                        last += (entry,)
                        chunks = (last,) if len(chunks) == 1 else chunks[:-1] + (last,)  # noqa: RUF005
                    else:
                        chunks = chunks + ((entry,),)  # noqa: RUF005
                if total is not None and (type(cost) is int or float(cost).is_integer()):
                    total += cost
                else:
                    total = None
            left = amount - (used + cost) + EPS_UNITS  # what the next admission sees
            remaining = int(left) if left > 0.0 else 0
            if not chunks:
                return None, Decision(True, amount, remaining, 0.0, 0.0, 0.0, limit)
            reset = chunks[-1][-1][0] + per - now
            return (chunks, total), Decision(True, amount, remaining, reset, 0.0, 0.0, limit)
        if cost > amount:
            retry = INF
        else:
            freed = used + cost - amount  # this much must leave the window first
            retry = 0.0
            for when, spent in _entries(chunks):
                freed -= spent
                if freed <= EPS_UNITS:
                    retry = when + per - now
                    break
        reset = chunks[-1][-1][0] + per - now if chunks else 0.0
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
        entries = [] if state is None else list(_entries(state[0]))
        cutoff = now + EPS_TIME - limit.per
        entries = [entry for entry in entries if entry[0] > cutoff]
        if cost:
            entries.insert(bisect_right(entries, now, key=_time), (now, cost))
        return _pack(entries)

    def refund(self, state: State, now: float, amount: float, limit: Limit, at: float) -> State:
        if state is None:
            return None
        entries = list(_entries(state[0]))
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


def _entries(chunks: Chunks) -> chain[Entry]:
    """Every entry, oldest first."""
    return chain.from_iterable(chunks)


def _expire(chunks: Chunks, total: float | None, cutoff: float) -> tuple[Chunks, float | None]:
    """Drop the entries at or before ``cutoff`` (the log is sorted by time)."""
    whole = 0
    while whole < len(chunks) and chunks[whole][-1][0] <= cutoff:
        whole += 1
    gone: list[tuple[Entry, ...]] = list(chunks[:whole])
    kept = chunks[whole:]
    if kept:
        first = kept[0]
        cut = bisect_right(first, cutoff, key=_time)
        if cut:
            gone.append(first[:cut])
            kept = (first[cut:], *kept[1:])
    if not kept:
        return (), 0
    if total is not None:
        total -= sum(entry[1] for entry in _entries(tuple(gone)))
    return kept, total


def _pack(entries: list[Entry]) -> State:
    """The state of a sorted list of entries (``None`` when empty)."""
    if not entries:
        return None
    chunks = tuple(tuple(entries[i : i + CHUNK]) for i in range(0, len(entries), CHUNK))
    costs = [spent for _, spent in entries]
    whole = all(type(c) is int or float(c).is_integer() for c in costs)
    return chunks, (sum(costs) if whole else None)


def _insert(chunks: Chunks, entry: Entry) -> Chunks:
    """Insert an entry older than the newest one where it belongs (usually the last chunk)."""
    when = entry[0]
    i = len(chunks) - 1
    while i > 0 and when < chunks[i][0][0]:
        i -= 1
    chunk = chunks[i]
    at = bisect_right(chunk, when, key=_time)
    grown = (*chunk[:at], entry, *chunk[at:])
    parts = (grown,) if len(grown) <= 2 * CHUNK else (grown[:CHUNK], grown[CHUNK:])
    return (*chunks[:i], *parts, *chunks[i + 1 :])
