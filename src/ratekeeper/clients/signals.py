"""Reading an upstream API's own rate-limit signals from its response headers (pure, no I/O).

Understood, in every response (not only 429s):

- ``Retry-After``: delay-seconds or an HTTP date (RFC 9110 §10.2.3);
- ``RateLimit`` / ``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers-10, Structured Field
  Lists of RFC 9651): ``"name";r=42;t=18`` and ``"name";q=100;w=60``; with several items the
  binding one (least remaining) counts;
- ``X-RateLimit-Remaining`` / ``-Reset`` / ``-Limit`` (GitHub, Twitter and most APIs): the reset
  in seconds, or as a Unix timestamp when it is that large (``EPOCH_THRESHOLD``).

`read_signals` turns them into one `Signals`: how many more requests the upstream admits
(``remaining``), in how many seconds its budget returns (``reset``), how long to stay away
(``retry_after``) and its quota per window when it says (``quota``). Malformed values are ignored,
never raised: a broken header must not break the caller's request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

__all__ = [
    "BARE_429_PAUSE",
    "EPOCH_THRESHOLD",
    "Headers",
    "Signals",
    "parse_retry_after",
    "parse_structured_list",
    "read_signals",
]

# A reset value at least this large is a Unix timestamp, not seconds (2001-09-09; no API resets a
# budget a billion seconds from now).
EPOCH_THRESHOLD = 1_000_000_000
TOO_MANY_REQUESTS = 429
# Seconds to stay away after a 429 that says neither when to retry nor when the budget returns.
BARE_429_PAUSE = 1.0


class Headers(Protocol):
    """Case-insensitive response headers (``httpx.Headers``, requests' ``CaseInsensitiveDict``)."""

    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True)
class Signals:
    """What one response said about the upstream's budget (``None``: it did not say)."""

    remaining: int | None = None  # requests the upstream admits before `reset`
    reset: float | None = None  # seconds until its budget returns
    retry_after: float | None = None  # seconds to send nothing (Retry-After)
    quota: int | None = None  # requests per window, when the upstream says

    @property
    def said_anything(self) -> bool:
        return self.remaining is not None or self.retry_after is not None


def parse_retry_after(value: str | None, wall_now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds, or an HTTP date read against
    ``wall_now``, Unix seconds); ``None`` if absent or malformed; never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; a malformed zone is read as GMT too
        return None
    return max(0.0, when.timestamp() - wall_now)


def _split(text: str, separator: str) -> list[str]:
    """``text`` split on ``separator`` outside double-quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_structured_list(value: str) -> list[tuple[str, dict[str, str]]]:
    """A Structured Field List of items with parameters, leniently: ``[(name, {param: value})]``
    (quotes removed from string names and values)."""
    items = []
    for member in _split(value, ","):
        pieces = [p.strip() for p in _split(member, ";")]
        if not pieces[0]:
            continue
        params = {}
        for piece in pieces[1:]:
            name, _, raw = piece.partition("=")
            params[name.strip().lower()] = raw.strip().strip('"') if raw else "?1"
        items.append((pieces[0].strip('"'), params))
    return items


def _number(value: str | None) -> float | None:
    """A finite number >= 0, or ``None``."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _integer(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _reset_seconds(value: str | None, wall_now: float) -> float | None:
    """Seconds until a reset given as seconds or, when that large, as a Unix timestamp."""
    number = _number(value)
    if number is None or number < EPOCH_THRESHOLD:
        return number
    return max(0.0, number - wall_now)


def _draft10(headers: Headers) -> tuple[int | None, float | None, int | None]:
    """(remaining, reset, quota) of the binding item of ``RateLimit``/``RateLimit-Policy``."""
    state = headers.get("RateLimit")
    if not state:
        return None, None, None
    quotas = {}
    for name, params in parse_structured_list(headers.get("RateLimit-Policy") or ""):
        quota = _integer(params.get("q"))
        if quota is not None:
            quotas[name] = quota
    best: tuple[int, float | None, int | None] | None = None
    for name, params in parse_structured_list(state):
        remaining = _integer(params.get("r"))
        if remaining is None:
            continue
        reset = _integer(params.get("t"))
        candidate = (remaining, None if reset is None else float(reset), quotas.get(name))
        if best is None or remaining < best[0]:
            best = candidate
    return best if best is not None else (None, None, None)


def read_signals(status: int, headers: Headers, wall_now: float) -> Signals:
    """The upstream's signals in one response (``wall_now``: Unix seconds, for HTTP dates and
    epoch resets). A 429 says "no room" even without headers; one that gives no time at all is
    read as ``Retry-After: BARE_429_PAUSE``."""
    remaining, reset, quota = _draft10(headers)
    if remaining is None:
        remaining = _integer(headers.get("X-RateLimit-Remaining"))
        reset = _reset_seconds(headers.get("X-RateLimit-Reset"), wall_now)
        quota = _integer(headers.get("X-RateLimit-Limit"))
    retry_after = parse_retry_after(headers.get("Retry-After"), wall_now)
    if status == TOO_MANY_REQUESTS:
        remaining = 0
        if retry_after is None and reset is None:
            retry_after = BARE_429_PAUSE
    if remaining == 0 and reset is None and retry_after is not None:
        reset = retry_after
    return Signals(remaining, reset, retry_after, quota)
