"""`Decision`: what a limiter answers for one request, and the HTTP headers it implies."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Literal

from ratekeeper.limits import Limit

__all__ = [
    "RESET_FORMATS",
    "SECONDS_DIGITS",
    "Decision",
    "ResetFormat",
    "combine",
    "from_rows",
    "policy_text",
    "seconds_to_reset",
]

INF = math.inf
POLICY_TEXTS_CACHED = 1024  # distinct limits whose policy text is kept formatted
# Header seconds are rounded to this many digits before rounding up (float noise tolerated).
SECONDS_DIGITS = 6
ResetFormat = Literal["seconds", "epoch"]  # what X-RateLimit-Reset counts
RESET_FORMATS: tuple[ResetFormat, ...] = ("seconds", "epoch")


class Decision:
    """The answer for one request.

    ``allowed``; ``limit`` (units per period of the binding limit); ``remaining`` (units that could
    be consumed right now, after this request); ``reset_after`` (seconds until fully replenished);
    ``retry_after`` (seconds until a request of this cost could pass, 0 when allowed, ``inf`` when
    the cost exceeds the capacity); ``delay`` (leaky bucket: seconds to wait before proceeding);
    ``policy`` (the binding `Limit`); ``fallback`` (True when the store was unreachable and the
    limiter answered by its ``on_store_error`` policy); ``details`` (one decision per limit when
    several limits applied, in the order configured).

    A plain slotted class rather than a frozen dataclass: it is built on every request and a
    frozen dataclass's ``__init__`` costs several times more. Treat it as a value.
    """

    __slots__ = (
        "allowed",
        "delay",
        "details",
        "fallback",
        "limit",
        "policy",
        "remaining",
        "reset_after",
        "retry_after",
    )

    def __init__(
        self,
        allowed: bool,
        limit: int,
        remaining: int,
        reset_after: float,
        retry_after: float,
        delay: float,
        policy: Limit,
        fallback: bool = False,
        details: tuple[Decision, ...] = (),
    ) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after
        self.delay = delay
        self.policy = policy
        self.fallback = fallback
        self.details = details

    def __bool__(self) -> bool:
        return self.allowed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = ", fallback=True" if self.fallback else ""
        return (
            f"Decision(allowed={self.allowed}, limit={self.limit}, remaining={self.remaining}, "
            f"reset_after={self.reset_after:.3f}, retry_after={self.retry_after:.3f}, "
            f"delay={self.delay:.3f}, policy={self.policy}{extra})"
        )

    @property
    def per_limit(self) -> tuple[Decision, ...]:
        """One decision per limit that applied (just this one for a single limit); a chain's
        levels are flattened, in order."""
        if not self.details:
            return (self,)
        return tuple(item for detail in self.details for item in detail.per_limit)

    def headers(self, reset: ResetFormat = "seconds", now: float | None = None) -> dict[str, str]:
        """IETF ``RateLimit``/``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers-10),
        ``X-RateLimit-Limit/Remaining/Reset`` and, on denial, ``Retry-After``.

        ``t`` and ``X-RateLimit-Reset`` are whole seconds, rounded up: until full replenishment,
        or, for a limit that denies, until this request could pass. With ``reset="epoch"``
        (netrun's and GitHub's convention) ``X-RateLimit-Reset`` is that moment as a Unix time
        instead, rounded up, counted from ``now`` (default: ``time.time()``). ``Retry-After`` is
        ``ceil(retry_after)``, never earlier than that ``t``; it is left out when the cost can
        never pass (``retry_after`` is infinite).
        """
        if not self.details:  # one limit, the common case: no joins, its t computed once
            t = seconds_to_reset(self)
            policies = policy_text(self.policy)
            states = _state_text(self, t)
            reset_value = t if reset == "seconds" else _reset(self, reset, now)
        else:
            items = self.per_limit
            policies = ", ".join(policy_text(d.policy) for d in items)
            states = ", ".join(_state_text(d) for d in items)
            reset_value = _reset(_binding(self), reset, now)
        headers = {
            "RateLimit-Policy": policies,
            "RateLimit": states,
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(reset_value),
        }
        if not self.allowed and self.retry_after != INF:
            headers["Retry-After"] = str(_ceil(self.retry_after))
        return headers


@functools.lru_cache(maxsize=POLICY_TEXTS_CACHED)
def policy_text(policy: Limit) -> str:
    """A limit's item of ``RateLimit-Policy`` (the same for every decision: formatted once)."""
    return f'"{policy.name}";q={policy.amount};w={_secs(policy.per)}'


def _state_text(d: Decision, t: int | None = None) -> str:
    """A limit's item of ``RateLimit`` (``t``: its :func:`seconds_to_reset` when already known)."""
    return f'"{d.policy.name}";r={d.remaining};t={seconds_to_reset(d) if t is None else t}'


def _secs(value: float) -> int:
    return _ceil(value)


def _ceil(value: float) -> int:
    # Tolerate float noise: 0.6000000000000001 s is 1 s, 2.0000000000004 s is 2 s.
    return max(0, math.ceil(round(value, SECONDS_DIGITS)))


def _binding(d: Decision) -> Decision:
    """The per-limit decision that ``d``'s ``limit``/``remaining`` describe (``d`` itself for a
    single limit): its ``t`` is the one ``X-RateLimit-Reset`` must report, not the combined
    ``reset_after`` (the slowest limit's)."""
    for item in d.details:
        if item.policy == d.policy and item.remaining == d.remaining and item.allowed == d.allowed:
            return _binding(item)
    return d


def _until(d: Decision) -> float:
    """Seconds until full replenishment, or, for a limit that denies, until it could pass."""
    if not d.allowed and d.retry_after != INF:
        return d.retry_after
    return d.reset_after


def seconds_to_reset(d: Decision) -> int:
    """``t`` of the ``RateLimit`` header: whole seconds, rounded up, until full replenishment, or,
    for a limit that denies, until this request could pass."""
    return _ceil(_until(d))


def _reset(d: Decision, reset: ResetFormat, now: float | None) -> int:
    """``X-RateLimit-Reset``: seconds (:func:`seconds_to_reset`), or the Unix time of that
    moment."""
    if reset == "seconds":
        return seconds_to_reset(d)
    if reset != "epoch":
        raise ValueError(f"reset must be 'seconds' or 'epoch', got {reset!r}")
    return _ceil((time.time() if now is None else now) + _until(d))


def combine(decisions: Sequence[Decision]) -> Decision:
    """Merge the decisions of several limits applied to one request (all-or-nothing).

    Allowed only if every limit allowed. The binding limit is the denying one that frees last
    (largest ``retry_after``) on denial, else the one with least remaining.
    """
    if len(decisions) == 1:
        return decisions[0]
    denied = [d for d in decisions if not d.allowed]
    if denied:
        binding = max(denied, key=lambda d: d.retry_after)
        delay = 0.0
    else:
        binding = min(decisions, key=lambda d: d.remaining)
        delay = max(d.delay for d in decisions)
    return Decision(
        not denied,
        binding.limit,
        binding.remaining,
        max(d.reset_after for d in decisions),
        binding.retry_after,
        delay,
        binding.policy,
        False,
        tuple(decisions),
    )


def from_rows(
    limits: Sequence[Limit], rows: Sequence[Sequence[float]], fallback: bool = False
) -> Decision:
    """Build the decision of a server-side evaluation (Lua, SQL): one row per limit, in the
    rule's order, of ``(allowed, remaining, reset_after, retry_after, delay)``; the rows of a
    denial describe each limit without this request's cost, as :func:`evaluate` does."""
    decisions = [
        Decision(
            bool(row[0]),
            limit.amount,
            int(row[1]),
            float(row[2]),
            float(row[3]),
            float(row[4]),
            limit,
            fallback,
        )
        for limit, row in zip(limits, rows, strict=True)
    ]
    return combine(decisions)
