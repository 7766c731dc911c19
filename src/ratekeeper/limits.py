"""`Limit`, the value object for "amount per period", and the rate-string grammar."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ratekeeper.errors import ConfigError

__all__ = ["Limit", "parse_limits", "to_limits"]

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}

# "100/minute", "100 per minute", "10/5s", "10 per 5 minutes", "3/2.5 seconds"
_ITEM = re.compile(
    r"""^\s*(?P<amount>\d+)\s*(?:/|\s+per\s+)\s*
        (?P<multiple>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True, slots=True)
class Limit:
    """``amount`` units per ``per`` seconds, with an optional ``burst`` (defaults to amount).

    Derived values used by the algorithms are computed once: ``capacity`` (the burst),
    ``rate`` (units per second) and ``interval`` (seconds per unit).
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
            or not math.isfinite(per)
            or per <= 0
        ):
            raise ConfigError(f"limit period must be a positive number of seconds, got {per!r}")
        if burst is not None and (
            isinstance(burst, bool) or not isinstance(burst, int) or burst <= 0
        ):
            raise ConfigError(f"limit burst must be a positive integer, got {burst!r}")
        capacity = amount if burst is None else burst
        name = f"{amount}-per-{_fmt_seconds(per)}s"
        if burst is not None:
            name += f"-burst-{burst}"
        setattr_ = object.__setattr__
        setattr_(self, "per", float(per))
        setattr_(self, "capacity", capacity)
        setattr_(self, "rate", amount / per)
        setattr_(self, "interval", per / amount)
        setattr_(self, "name", name)

    def __str__(self) -> str:
        text = f"{self.amount}/{_fmt_seconds(self.per)}s"
        return text if self.burst is None else f"{text} (burst {self.burst})"


def parse_limits(text: str) -> list[Limit]:
    """Parse ``"10/second;1000/hour"`` into limits, in the order written.

    Raises :class:`ConfigError` naming the offending part.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a rate string is expected, got {type(text).__name__}: {text!r}")
    parts = text.split(";")
    if not text.strip():
        raise ConfigError("empty rate string; expected something like '100/minute'")
    limits = []
    for part in parts:
        match = _ITEM.match(part)
        if match is None:
            raise ConfigError(
                f"cannot parse rate {part.strip()!r} in {text!r}; expected forms like "
                "'100/minute', '100 per minute', '10/5s' or '10/second;1000/hour'"
            )
        unit = match["unit"].lower()
        base = _UNITS.get(unit) or (_UNITS.get(unit[:-1]) if unit.endswith("s") else None)
        if base is None:
            raise ConfigError(
                f"unknown time unit {match['unit']!r} in {part.strip()!r}; "
                "use second, minute, hour, day (or s, m, h, d)"
            )
        multiple = float(match["multiple"]) if match["multiple"] else 1.0
        amount = int(match["amount"])
        if amount <= 0 or multiple <= 0:
            raise ConfigError(f"rate {part.strip()!r} must have a positive amount and period")
        limits.append(Limit(amount, per=multiple * base))
    return limits


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
