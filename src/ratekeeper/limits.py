"""`Limit`, the value object for "amount per period", and the rate-string grammar."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ratekeeper.errors import ConfigError

__all__ = ["Limit", "parse_limits", "to_limits"]

_UNIT_NAMES = {
    1: ("s", "sec", "secs", "second", "seconds"),
    60: ("m", "min", "mins", "minute", "minutes"),
    3600: ("h", "hr", "hrs", "hour", "hours"),
    86400: ("d", "day", "days"),
}
# Every accepted spelling, exactly: "ms" is not "m" + a plural s.
_UNITS = {name: seconds for seconds, names in _UNIT_NAMES.items() for name in names}

# "100/minute", "100 per minute", "10/5s", "10 per 5 minutes", "3/2.5 seconds", matched against
# the part with its outer whitespace stripped. Linear time: no two neighbouring pieces can match
# the same characters (digits, letters and whitespace alternate, each `\s*` is followed by a
# non-space), so a failed match never retries a split of a run of spaces. ASCII only:
# Arabic-Indic or full-width digits are not digits here.
_ITEM = re.compile(
    r"(?P<amount>[0-9]+)(?:\s*/|\s+per(?=\s))\s*"
    r"(?:(?P<multiple>[0-9]+(?:\.[0-9]+)?)\s*)?(?P<unit>[a-z]+)",
    re.IGNORECASE | re.ASCII,
)
_SPACE = " \t\n\r\f\v"  # what `\s` matches under re.ASCII

MAX_RATE_STRING = 1000
"""Longest rate string :func:`parse_limits` reads (characters). Rate strings may come from
request-time code (dynamic limits); longer text is refused before any parsing."""

MAX_AMOUNT = 2**53
"""Largest ``amount`` and ``burst``: every store holds counts as IEEE doubles (Lua numbers,
PostgreSQL float8), which represent every whole number up to 2**53 exactly."""

MIN_PERIOD = 0.001
"""Shortest ``per`` (seconds). Window boundaries are compared with a tolerance of
:data:`ratekeeper.algorithms.base.EPS_TIME` (1 µs); a period must be much longer than that."""

MAX_PERIOD = 10 * 365 * 86400.0
"""Longest ``per``, and longest time a drained limit may take to refill its burst
(``burst * per / amount``), in seconds (10 years). Stores keep a state for up to twice that:
as milliseconds for Redis ``PEXPIRE`` and as a PostgreSQL interval, both far from overflowing."""


def _quote(text: str) -> str:
    """``repr`` of a piece of a rate string for an error message, elided when it is long."""
    return repr(text) if len(text) <= 60 else f"{text[:50]!r}... ({len(text)} characters)"


def _short(number: int) -> str:
    """A whole number for an error message, elided when it is very long."""
    text = str(number) if number.bit_length() < 3000 else f"a {number.bit_length()}-bit number"
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True, slots=True)
class Limit:
    """``amount`` units per ``per`` seconds, with an optional ``burst`` (defaults to amount).

    Derived values used by the algorithms are computed once: ``capacity`` (the burst),
    ``rate`` (units per second) and ``interval`` (seconds per unit).

    Every store represents every limit in these ranges exactly, so a limit outside them raises
    :class:`ConfigError` here, never at the first request: ``amount`` and ``burst`` at most
    :data:`MAX_AMOUNT` (2**53); ``per`` from :data:`MIN_PERIOD` (1 ms) to :data:`MAX_PERIOD`
    (10 years); and a full refill of the burst (``burst * per / amount``) within
    :data:`MAX_PERIOD`.
    """

    amount: int
    per: float = 1.0
    burst: int | None = None
    capacity: int = field(init=False, repr=False, compare=False)
    rate: float = field(init=False, repr=False, compare=False)
    interval: float = field(init=False, repr=False, compare=False)
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        amount, per, burst = self.amount, self.per, self.burst
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ConfigError(f"limit amount must be a positive integer, got {amount!r}")
        if (
            isinstance(per, bool)
            or not isinstance(per, int | float)
            or (isinstance(per, float) and not math.isfinite(per))
            or per <= 0
        ):
            raise ConfigError(f"limit period must be a positive number of seconds, got {per!r}")
        if burst is not None and (
            isinstance(burst, bool) or not isinstance(burst, int) or burst <= 0
        ):
            raise ConfigError(f"limit burst must be a positive integer, got {burst!r}")
        if amount > MAX_AMOUNT:
            raise ConfigError(f"limit amount must be at most 2**53, got {_short(amount)}")
        if burst is not None and burst > MAX_AMOUNT:
            raise ConfigError(f"limit burst must be at most 2**53, got {_short(burst)}")
        if not MIN_PERIOD <= per <= MAX_PERIOD:
            raise ConfigError(
                f"limit period must be from {MIN_PERIOD} s to {MAX_PERIOD:.0f} s (10 years), "
                f"got {per!r}"
            )
        capacity = amount if burst is None else burst
        rate = amount / per
        interval = per / amount
        if capacity * interval > MAX_PERIOD:
            raise ConfigError(
                f"a limit must refill its burst within {MAX_PERIOD:.0f} s (10 years); "
                f"burst {capacity} at {amount} per {per!r} s takes {capacity * interval:.6g} s"
            )
        name = f"{amount}-per-{_fmt_seconds(per)}s"
        if burst is not None:
            name += f"-burst-{burst}"
        setattr_ = object.__setattr__
        setattr_(self, "per", float(per))
        setattr_(self, "capacity", capacity)
        setattr_(self, "rate", rate)
        setattr_(self, "interval", interval)
        setattr_(self, "name", name)

    def __str__(self) -> str:
        text = f"{self.amount}/{_fmt_seconds(self.per)}s"
        return text if self.burst is None else f"{text} (burst {self.burst})"


def parse_limits(text: str) -> list[Limit]:
    """Parse ``"10/second;1000/hour"`` into limits, in the order written.

    Raises :class:`ConfigError` naming the offending part. Runs in time linear in the length of
    the text, which may be at most :data:`MAX_RATE_STRING` characters.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a rate string is expected, got {type(text).__name__}: {text!r}")
    if len(text) > MAX_RATE_STRING:
        raise ConfigError(
            f"rate string of {len(text)} characters; at most {MAX_RATE_STRING} are accepted "
            f"({_quote(text)})"
        )
    if not text.strip(_SPACE):
        raise ConfigError("empty rate string; expected something like '100/minute'")
    return [_parse_item(part.strip(_SPACE), text) for part in text.split(";")]


def _parse_item(part: str, text: str) -> Limit:
    match = _ITEM.fullmatch(part)
    if match is None:
        raise ConfigError(
            f"cannot parse rate {_quote(part)} in {_quote(text)}; expected forms like "
            "'100/minute', '100 per minute', '10/5s' or '10/second;1000/hour'"
        )
    amount_text, multiple_text, unit = match["amount"], match["multiple"], match["unit"]
    base = _UNITS.get(unit.lower())
    if base is None:
        raise ConfigError(
            f"unknown time unit {unit!r} in {_quote(part)}; use second, minute, hour, day "
            "(or s, m, h, d); for less than a second write decimal seconds, e.g. '10/0.5s'"
        )
    # Longer digit strings than these are out of range anyway (and Python refuses int() of
    # more than 4300 digits): say so before converting.
    if len(amount_text) > len(str(MAX_AMOUNT)):
        raise ConfigError(f"rate {_quote(part)}: the amount must be at most 2**53")
    multiple = float(multiple_text) if multiple_text else 1.0
    amount = int(amount_text)
    if amount <= 0 or multiple <= 0:
        raise ConfigError(f"rate {_quote(part)} must have a positive amount and period")
    try:
        return Limit(amount, per=multiple * base)
    except ConfigError as error:
        raise ConfigError(f"rate {_quote(part)}: {error}") from None


def to_limits(value: str | Limit | list[Limit] | tuple[Limit, ...]) -> tuple[Limit, ...]:
    """Accept a rate string, a `Limit` or a sequence of limits; return a non-empty tuple."""
    if isinstance(value, str):
        return tuple(parse_limits(value))
    if isinstance(value, Limit):
        return (value,)
    if isinstance(value, list | tuple):
        items = tuple(value)
        if items and all(isinstance(item, Limit) for item in items):
            return items
    raise ConfigError(
        f"limits must be a rate string, a Limit or a non-empty sequence of Limit, got {value!r}"
    )
