"""``ratekeeper simulate``: replay real traffic through each algorithm before turning a limit on.

Reads a CSV of ``timestamp,key[,cost]`` (Unix seconds or ISO 8601; a header row is skipped) or an
access log in common/combined log format (the key is the client address, or ``--key user`` /
``path``), replays it on a `FakeClock` through a memory-store limiter per algorithm, and reports
per algorithm the requests admitted and denied and the keys that would have been limited. With
``--chart out.png`` it draws admitted vs offered requests over time (matplotlib, imported only
then: ``pip install "ratekeeper[chart]"``).

The replay is exact for the memory store; Redis, PostgreSQL and NATS run the same math.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.errors import ConfigError
from ratekeeper.limiter import RateLimiter
from ratekeeper.limits import Limit, parse_limits
from ratekeeper.testing.clock import FakeClock

__all__ = [
    "LOG_KEYS",
    "AlgorithmResult",
    "Request",
    "Simulation",
    "chart",
    "read_requests",
    "report",
    "simulate",
]

# common/combined log format: host ident user [time] "request" status size ["referer" "agent"]
CLF = re.compile(r'^(?P<host>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)"')
CLF_TIME = "%d/%b/%Y:%H:%M:%S %z"
LOG_KEYS = ("host", "user", "path")
BUCKETS = 60  # points on the time axis of the chart and of the series
TOP_KEYS = 10  # limited keys listed per algorithm


@dataclass(frozen=True)
class Request:
    time: float  # Unix seconds
    key: str
    cost: float = 1.0


@dataclass
class AlgorithmResult:
    algorithm: str
    admitted: int = 0
    denied: int = 0
    limited: Counter[str] = field(default_factory=Counter)  # denied requests per key
    admitted_series: list[int] = field(default_factory=list)


@dataclass
class Simulation:
    limits: tuple[Limit, ...]
    requests: int
    keys: int
    start: float
    span: float  # seconds from the first request to the last
    bucket: float  # seconds per point of the series
    offered_series: list[int]
    results: list[AlgorithmResult]
    source: str = ""


def _timestamp(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _from_log(lines: Iterable[str], key: str) -> Iterable[Request]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = CLF.match(line)
        if match is None:
            raise ConfigError(f"line {number} is not in common/combined log format: {line[:80]!r}")
        when = datetime.strptime(match["time"], CLF_TIME).timestamp()
        if key == "path":
            parts = match["request"].split()
            value = parts[1].split("?")[0] if len(parts) > 1 else "-"
        else:
            value = match[key]
        yield Request(when, value)


def _from_csv(text: str) -> Iterable[Request]:
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip():
            continue
        try:
            when = _timestamp(row[0])
            cost = float(row[2]) if len(row) > 2 and row[2].strip() else 1.0
            if len(row) < 2 or not math.isfinite(cost) or cost < 0:
                raise ValueError(row)
        except ValueError:
            if number == 1:
                continue  # a header row
            raise ConfigError(f"row {number} is not timestamp,key[,cost]: {row!r}") from None
        yield Request(when, row[1].strip(), cost)


def read_requests(path: str | Path, key: str = "host") -> tuple[list[Request], str]:
    """The requests of a CSV or common/combined log file, in time order, and the format's name."""
    if key not in LOG_KEYS:
        raise ConfigError(f"key must be one of {', '.join(LOG_KEYS)}, got {key!r}")
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if CLF.match(first):
        found, kind = list(_from_log(text.splitlines(), key)), "access log"
    else:
        found, kind = list(_from_csv(text)), "CSV"
    found.sort(key=lambda r: r.time)  # stable: equal times keep their order
    return found, kind


def simulate(
    requests: Sequence[Request],
    limits: str | Sequence[Limit],
    algorithms: Sequence[str] = tuple(ALGORITHMS),
    *,
    buckets: int = BUCKETS,
) -> Simulation:
    """Replay ``requests`` (in time order) through one fresh limiter per algorithm."""
    parsed = tuple(parse_limits(limits) if isinstance(limits, str) else limits)
    for name in algorithms:
        if name not in ALGORITHMS:
            raise ConfigError(f"unknown algorithm {name!r}; one of {', '.join(ALGORITHMS)}")
    start = requests[0].time if requests else 0.0
    span = requests[-1].time - start if requests else 0.0
    bucket = max(span / buckets, 1.0)
    points = int(span // bucket) + 1
    offered = [0] * points
    for request in requests:
        offered[int((request.time - start) // bucket)] += 1
    results = []
    for name in algorithms:
        clock = FakeClock(start)
        limiter = RateLimiter(list(parsed), algorithm=name, clock=clock)
        result = AlgorithmResult(name, admitted_series=[0] * points)
        for request in requests:
            if request.time > clock():
                clock.advance(request.time - clock())
            if limiter.hit(request.key, request.cost).allowed:
                result.admitted += 1
                result.admitted_series[int((request.time - start) // bucket)] += 1
            else:
                result.denied += 1
                result.limited[request.key] += 1
        results.append(result)
    keys = len({r.key for r in requests})
    return Simulation(parsed, len(requests), keys, start, span, bucket, offered, results)


def report(simulation: Simulation, top: int = TOP_KEYS) -> str:
    """The table printed by ``ratekeeper simulate``."""
    limits = "; ".join(map(str, simulation.limits))
    lines = [
        f"replayed {simulation.requests} requests from {simulation.keys} keys over "
        f"{simulation.span:.0f} s{f' ({simulation.source})' if simulation.source else ''} "
        f"against {limits!r}",
        "",
        f"{'algorithm':<16}{'admitted':>10}{'denied':>10}{'denied %':>10}{'keys limited':>14}",
    ]
    for r in simulation.results:
        share = 100 * r.denied / simulation.requests if simulation.requests else 0.0
        lines.append(
            f"{r.algorithm:<16}{r.admitted:>10}{r.denied:>10}{share:>9.1f}%{len(r.limited):>14}"
        )
    lines += ["", "keys that would have been limited (denied requests):"]
    for r in simulation.results:
        worst = ", ".join(f"{key} ({n})" for key, n in r.limited.most_common(top))
        more = f", and {len(r.limited) - top} more" if len(r.limited) > top else ""
        lines.append(f"  {r.algorithm:<14} {worst or 'none'}{more}")
    return "\n".join(lines) + "\n"


def chart(simulation: Simulation, path: str | Path) -> None:
    """A PNG of offered vs admitted requests per time bucket, one line per algorithm."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError('--chart needs matplotlib: pip install "ratekeeper[chart]"') from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot

    minutes = [i * simulation.bucket / 60 for i in range(len(simulation.offered_series))]
    results = simulation.results
    columns = 2 if len(results) > 1 else 1
    rows = math.ceil(len(results) / columns)
    figure, grid = pyplot.subplots(
        rows,
        columns,
        figsize=(6 * columns, 2.4 * rows + 1),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    try:
        for axes, r in zip(grid.flat, results, strict=False):
            axes.fill_between(
                minutes, simulation.offered_series, step="post", alpha=0.3, label="offered"
            )
            axes.step(minutes, r.admitted_series, where="post", color="C1", label="admitted")
            share = 100 * r.denied / simulation.requests if simulation.requests else 0.0
            axes.set_title(f"{r.algorithm}: {share:.1f}% denied", fontsize="medium")
        for axes in grid.flat[len(results) :]:
            axes.set_visible(False)
        limits = "; ".join(map(str, simulation.limits))
        started = datetime.fromtimestamp(simulation.start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        figure.suptitle(f"admitted vs offered load under {limits}")
        figure.supxlabel(f"minutes since {started}")
        figure.supylabel(f"requests per {simulation.bucket:.0f} s")
        grid.flat[0].legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        pyplot.close(figure)
