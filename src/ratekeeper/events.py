"""What a limiter tells its observers: one `Event` per decision, acquisition, timeout or release.

An observer is any object with ``observe(event)``; a limiter calls it synchronously, right after
the decision, from the thread (or task) that made it. An observer must be quick and must not block
(the StatsD one sends a UDP datagram; the Prometheus one increments counters); one that raises is
logged and skipped, it never breaks a request. With no observer attached the limiter builds no
event at all.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from ratekeeper.decision import Decision

__all__ = ["Event", "EventKind", "Observer", "Result"]

# "hit": a decision (hit/enforce, and each hit inside acquire); "acquire": acquire() got its slot
# after ``wait_seconds``; "timeout": acquire() gave up after ``wait_seconds``; "release": a
# concurrency slot was given back. ``in_flight`` is the limiter's slots held after the event.
EventKind = Literal["hit", "acquire", "timeout", "release"]
# "allowed"/"denied": the answer; "shadow_denied": allowed only because of shadow mode or denied
# only by a candidate limit (``shadow_limits``); "error": the store could not answer
# (``error`` names why; ``decision`` is the fallback, or None under on_store_error="raise").
Result = Literal["allowed", "denied", "shadow_denied", "error"]


class Event:
    """One thing a limiter did. A plain slotted class, not a frozen dataclass: one is built per
    decision while observers are attached, and a frozen dataclass's ``__init__`` costs several
    times more. Treat it as a value."""

    __slots__ = (
        "algorithm",
        "candidate",
        "decision",
        "error",
        "in_flight",
        "key",
        "kind",
        "limiter",
        "result",
        "shadow_denied",
        "store",
        "store_seconds",
        "time",
        "wait_seconds",
    )

    def __init__(
        self,
        kind: EventKind,
        limiter: str,  # the limiter's name
        algorithm: str,
        store: str,  # the store's kind: "memory", "redis", "postgres", "nats", ...
        key: str,  # the user key: never put it in a metric label
        result: Result,
        decision: Decision | None,
        time: float,  # wall-clock seconds (time.time()) when the event happened
        store_seconds: float = 0.0,  # the store round trip of a "hit" (0 when answered locally)
        wait_seconds: float = 0.0,  # "acquire"/"timeout": how long the caller waited
        in_flight: int = 0,
        error: str = "",  # "error" results: the kind of failure, e.g. "StoreUnavailable"
        shadow_denied: bool = False,  # a would-be denial (shadow mode or a candidate limit)
        candidate: Decision | None = None,  # the candidate limits' decision (``shadow_limits``)
    ) -> None:
        self.kind = kind
        self.limiter = limiter
        self.algorithm = algorithm
        self.store = store
        self.key = key
        self.result = result
        self.decision = decision
        self.time = time
        self.store_seconds = store_seconds
        self.wait_seconds = wait_seconds
        self.in_flight = in_flight
        self.error = error
        self.shadow_denied = shadow_denied
        self.candidate = candidate

    def __repr__(self) -> str:
        return (
            f"Event({self.kind}, limiter={self.limiter!r}, key={self.key!r}, "
            f"result={self.result!r}, decision={self.decision!r})"
        )


@runtime_checkable
class Observer(Protocol):
    def observe(self, event: Event) -> None: ...
