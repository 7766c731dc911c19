"""What the outbound clients share: the upstream gate, and one request's flow as steps.

The gate is a table per limiter (`gate_of`) that every client built on that limiter object shares
(threads and asyncio tasks of one process). Per key it holds what the upstream last said:

- **pause**: ``Retry-After``, or no remaining budget with a known reset: nothing leaves before it;
- **budget**: after an answer said ``r=N``, at most N more requests leave before its reset,
  however many callers wait. Requests are numbered as they leave; the answer to request ``s``
  allows requests up to ``s + N - k``, where k is the number of requests sent before ``s`` and
  still unanswered (the upstream may serve them after ``s``: they may not be counted in N yet).
  Only the answer to the latest request counts (older answers that arrive late describe an older
  state), so nothing is counted twice;
- **probe**: while nothing is known about a key (its first request, after its budget's reset,
  after a 429 that said nothing), one request at a time leaves and the others wait for its
  answer, so a crowd of callers cannot overrun a budget nobody has seen yet. After a reset the
  quota (``q=``, ``X-RateLimit-Limit``) is not assumed to be back whole: requests sent before the
  reset and served after it spend the new window too, and only an answer can say how many. The
  cost is one round trip per window.

An upstream that sends no signal at all costs one probe: after its first answer, requests flow as
the local limiter allows. Across processes the gate is not shared (the local limiter's store is:
that is where the rate the fleet sends at is agreed); each process learns the upstream's answers
from its own responses, so with P processes at most P requests probe a silent budget at once.

Everything here is pure: `request_flow` yields steps that ``httpx.py`` and ``requests.py`` run
with `ratekeeper._drive` (blocking or awaited).
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ratekeeper.clients.signals import TOO_MANY_REQUESTS, Headers, Signals, read_signals

__all__ = [
    "ACQUIRE",
    "KeySpec",
    "DISCARD",
    "MAX_429_RETRIES",
    "PROBE_POLL",
    "RELEASE",
    "SEND",
    "SLEEP",
    "Gate",
    "KeyState",
    "gate_of",
    "key_of",
    "request_flow",
]

# Seconds between two looks at the gate while waiting for an answer (a probe's, or one that
# renews a budget): well under a round trip to any remote API.
PROBE_POLL = 0.005
# How often a 429 is retried with retry_429=True before it is returned to the caller.
MAX_429_RETRIES = 5

# The steps of one request's flow.
ACQUIRE, RELEASE, SLEEP, SEND, DISCARD = "acquire", "release", "sleep", "send", "discard"
Step: TypeAlias = tuple[str, Any]
# A client's ``key=``: a string, a function of the request (called once per request), or None
# for the request's host.
KeySpec: TypeAlias = str | Callable[[Any], str] | None


def key_of(spec: KeySpec, request: object, host: str) -> str:
    """The limiter key of ``request``: ``spec`` itself, ``spec(request)``, or ``host``."""
    if spec is None:
        return host
    if isinstance(spec, str):
        return spec
    key = spec(request)
    if not isinstance(key, str):
        raise TypeError(f"key function {spec!r} returned {key!r}, not a str")
    return key


@dataclass
class KeyState:
    """What the gate knows about one key of the upstream (times on the monotonic clock)."""

    sent: int = 0  # requests that left, numbered 1, 2, ...
    answered: int = 0  # the number of the request whose answer set the budget
    limit: int | None = None  # requests numbered up to this may leave (None: no budget known)
    window_end: float | None = None  # when the budget runs out and the quota returns
    paused_until: float = -math.inf
    probe: bool = True  # nothing known: one request at a time
    probing: int = 0  # the number of the probe in flight (0: none)
    flying: set[int] = field(default_factory=set)  # the numbers of unanswered requests


class Gate:
    """The upstream's signals per key, shared by every client of one limiter (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, KeyState] = {}

    def state(self, key: str) -> KeyState:
        with self._lock:
            return self._keys.setdefault(key, KeyState())

    def admit(self, key: str, now: float) -> tuple[float, int]:
        """``(0, number)`` if a request for ``key`` may leave now (it is counted as sent), else
        ``(seconds to wait before asking again, 0)``."""
        with self._lock:
            s = self._keys.setdefault(key, KeyState())
            if now < s.paused_until:
                return s.paused_until - now, 0
            if s.window_end is not None and now >= s.window_end:
                self._renew(s)
            if s.limit is not None and s.sent >= s.limit:
                wait = PROBE_POLL if s.window_end is None else s.window_end - now
                return max(wait, PROBE_POLL), 0
            if s.probe:
                if s.probing:
                    return PROBE_POLL, 0
                s.probing = s.sent + 1
            s.sent += 1
            s.flying.add(s.sent)
            return 0.0, s.sent

    @staticmethod
    def _renew(s: KeyState) -> None:
        """The budget's window ended: probe the new one."""
        s.window_end = s.limit = None
        s.answered = s.sent  # answers to requests sent before now describe the old window
        s.probe = True

    def answered(self, key: str, number: int, signals: Signals | None, now: float) -> None:
        """Request ``number`` of ``key`` came back (``signals`` None: it failed, no answer)."""
        with self._lock:
            s = self._keys.setdefault(key, KeyState())
            s.flying.discard(number)
            if s.probing == number:
                s.probing = 0
            if signals is None:
                return
            if signals.retry_after is not None:
                s.paused_until = max(s.paused_until, now + signals.retry_after)
            if number <= s.answered:
                return  # an older state of the upstream than the one already known
            s.answered = number
            if signals.remaining is None:
                s.limit = s.window_end = None  # the upstream says nothing: flow freely
                s.probe = False
                return
            older = sum(1 for n in s.flying if n < number)  # maybe served after this one
            s.limit = number + max(signals.remaining - older, 0)
            s.window_end = None if signals.reset is None else now + signals.reset
            # No room and no known reset: probe (one at a time) instead of stopping for good.
            s.probe = signals.remaining == 0 and s.window_end is None
            if s.probe:
                s.limit = None


_gates: weakref.WeakKeyDictionary[Any, Gate] = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()


def gate_of(limiter: object) -> Gate:
    """The gate shared by every client built on ``limiter`` (the same object)."""
    with _gates_lock:
        gate = _gates.get(limiter)
        if gate is None:
            gate = _gates[limiter] = Gate()
        return gate


def request_flow(
    gate: Gate,
    key: str,
    status_of: Callable[[Any], int],
    headers_of: Callable[[Any], Headers],
    *,
    retry_429: bool,
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> Generator[Step, Any, Any]:
    """One request through the local limiter and the upstream gate: yields ``ACQUIRE`` (the
    limiter's permit, held until the answer), ``SLEEP`` (seconds), ``SEND`` (the response),
    ``RELEASE`` (the permit) and ``DISCARD`` (a 429 about to be retried); returns the response."""
    attempt = 0
    while True:
        permit = yield ACQUIRE, None
        try:
            while True:
                wait, number = gate.admit(key, monotonic())
                if not wait:
                    break
                yield SLEEP, wait
            try:
                response = yield SEND, None
            except BaseException:
                gate.answered(key, number, None, monotonic())
                raise
            status = status_of(response)
            gate.answered(
                key, number, read_signals(status, headers_of(response), wall()), monotonic()
            )
        finally:
            yield RELEASE, permit
        if status != TOO_MANY_REQUESTS or not retry_429 or attempt >= MAX_429_RETRIES:
            return response
        attempt += 1
        yield DISCARD, response
