"""The exact over-limit local cache (``RateLimiter(..., local_cache=True)``).

After the store denies ``key`` a request of cost ``c`` with ``retry_after = t`` (measured from
the clock reading taken before the call), no request of cost >= ``c`` on that key can pass before
``now + t``: state only replenishes with time, and other clients can only consume more. So until
then such requests are answered here, as denied, without a round trip. The answer is exact for
``allowed`` (a denial) and, for the same cost, for ``retry_after``; for a larger cost
``retry_after`` is a lower bound (the wait is at least that long) and ``remaining`` is the value
at the denial. Requests of a smaller cost, of cost 0, or after ``t`` go to the store as usual.

The cache never denies longer than the store would, whichever way the app server's clock moves:
after a step forward, ``until`` passes early; after a step back (``now`` before the denial's own
reading), the entry is dropped and the store answers, so a server-time store's clock decides.

What can make a request pass earlier is a reset: `reset` through the same limiter clears the
key's entry; a reset made elsewhere (another process, another limiter) is seen once ``t`` passes.

Bounded: at most ``size`` keys; the oldest entry is dropped first (losing an entry only costs a
round trip). No lock: each operation is one or two dict operations, atomic under the GIL, and a
lost race only means a round trip more or less, never a wrong answer.
"""

from __future__ import annotations

from ratekeeper.algorithms.base import EPS_TIME
from ratekeeper.decision import Decision

__all__ = ["DEFAULT_SIZE", "OverLimitCache"]

DEFAULT_SIZE = 10_000


class OverLimitCache:
    """Denials by key: ``key -> (until, cost, now at the denial, decision)``."""

    __slots__ = ("entries", "size")

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self.entries: dict[str, tuple[float, float, float, Decision]] = {}

    def check(self, key: str, cost: float, now: float) -> Decision | None:
        """The local denial for this request, or ``None`` to ask the store."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        until, denied_cost, then, decision = entry
        # `retry_after` later passes at the store (its tolerance), and a clock that stepped back
        # behind the denial says nothing about the store's time any more.
        if now + EPS_TIME >= until or now < then:
            self.entries.pop(key, None)
            return None
        if cost < denied_cost:
            return None
        return _aged(decision, now - then, until - now)

    def record(self, key: str, cost: float, now: float, decision: Decision) -> None:
        """Remember a denial of the store (call only with ``not decision.allowed``)."""
        if decision.fallback or cost <= 0 or decision.retry_after <= 0:
            return
        entries = self.entries
        entries.pop(key, None)  # re-inserted last: the dict's order is the eviction order
        if len(entries) >= self.size:
            oldest = next(iter(entries), None)  # None when another thread emptied it
            if oldest is not None:
                entries.pop(oldest, None)
        entries[key] = (now + decision.retry_after, cost, now, decision)

    def discard(self, key: str) -> None:
        self.entries.pop(key, None)

    def __len__(self) -> int:
        return len(self.entries)


def _aged(decision: Decision, elapsed: float, retry_after: float) -> Decision:
    """``decision`` as it reads ``elapsed`` seconds later."""
    details = tuple(
        _aged(d, elapsed, max(d.retry_after - elapsed, 0.0)) if not d.allowed else d
        for d in decision.details
    )
    return Decision(
        False,
        decision.limit,
        decision.remaining,
        max(decision.reset_after - elapsed, 0.0),
        retry_after,
        0.0,
        decision.policy,
        False,
        details,
    )
