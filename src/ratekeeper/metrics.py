"""`LimiterMetrics`, the snapshot of what one limiter did, and the counters behind it.

Counting is exact across threads and nearly free on the hot path: the per-decision counters are
`itertools.count` objects, whose ``next()`` is one atomic C call under the GIL (no lock, no
read-modify-write race). What ``acquire`` records (waits, timeouts, slots held) is rarer and goes
under a lock.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

__all__ = ["Counters", "LimiterMetrics"]


@dataclass(frozen=True, slots=True)
class LimiterMetrics:
    """What a limiter has done since it was built (``limiter.metrics()``)."""

    name: str
    allowed: int = 0
    denied: int = 0
    shadow_denied: int = 0
    acquisitions: int = 0
    timeouts: int = 0
    wait_seconds_total: float = 0.0
    wait_seconds_max: float = 0.0
    in_flight: int = 0
    store_errors: int = 0

    def as_dict(self) -> dict[str, float | int | str]:
        """Every counter by name, as a plain dict (for JSON, logs and the admin app)."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def total(cls, name: str, parts: list[LimiterMetrics]) -> LimiterMetrics:
        """Several snapshots of one limiter (its sync and asyncio faces) added up; the longest
        wait is the largest of theirs."""
        return cls(
            name=name,
            allowed=sum(p.allowed for p in parts),
            denied=sum(p.denied for p in parts),
            shadow_denied=sum(p.shadow_denied for p in parts),
            acquisitions=sum(p.acquisitions for p in parts),
            timeouts=sum(p.timeouts for p in parts),
            wait_seconds_total=sum((p.wait_seconds_total for p in parts), 0.0),
            wait_seconds_max=max((p.wait_seconds_max for p in parts), default=0.0),
            in_flight=sum(p.in_flight for p in parts),
            store_errors=sum(p.store_errors for p in parts),
        )


def _value(counter: itertools.count[int]) -> int:
    """The next value ``counter`` would give, i.e. how many times it was advanced."""
    return int(repr(counter)[len("count(") : -1])


class Counters:
    """The live counters of one limiter."""

    __slots__ = (
        "acquisitions",
        "allowed",
        "denied",
        "in_flight",
        "lock",
        "shadow_denied",
        "store_errors",
        "timeouts",
        "wait_max",
        "wait_total",
    )

    def __init__(self) -> None:
        self.allowed = itertools.count()
        self.denied = itertools.count()
        self.shadow_denied = itertools.count()
        self.store_errors = itertools.count()
        self.lock = threading.Lock()
        self.acquisitions = 0
        self.timeouts = 0
        self.wait_total = 0.0
        self.wait_max = 0.0
        self.in_flight = 0

    def waited(self, seconds: float, *, acquired: bool) -> None:
        """One ``acquire`` ended: it got its slot (``acquired``) or timed out."""
        seconds = max(seconds, 0.0)
        with self.lock:
            if acquired:
                self.acquisitions += 1
            else:
                self.timeouts += 1
            self.wait_total += seconds
            if seconds > self.wait_max:
                self.wait_max = seconds

    def slots(self, change: int) -> None:
        """A concurrency slot was taken (+1) or given back (-1)."""
        with self.lock:
            self.in_flight += change

    def snapshot(self, name: str) -> LimiterMetrics:
        with self.lock:
            return LimiterMetrics(
                name=name,
                allowed=_value(self.allowed),
                denied=_value(self.denied),
                shadow_denied=_value(self.shadow_denied),
                acquisitions=self.acquisitions,
                timeouts=self.timeouts,
                wait_seconds_total=self.wait_total,
                wait_seconds_max=self.wait_max,
                in_flight=self.in_flight,
                store_errors=_value(self.store_errors),
            )
