"""Write ``benchmarks.md`` (tables with ratios) and ``benchmarks.png`` (matplotlib, Agg)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchmarks.adapters import AMOUNT, FAMILIES, LIBRARIES
from benchmarks.results import (
    CLUSTER,
    HOTKEY,
    OPTIONAL_SECTIONS,
    SECTIONS,
    THR_ONE,
    WEB,
    WEB_WRK,
    Row,
    Settings,
    fmt,
)

CHART_SECTIONS = (
    "Memory, sync, 1 key",
    "Memory, sync, 10,000 keys",
    THR_ONE,
    "Redis, sync, 10,000 keys",
    "Redis, asyncio, 50 tasks, 10,000 keys",
    HOTKEY,
    CLUSTER,
    WEB,
)
BARE = "bare app"  # a web case's app without a limiter: its time, not an overhead
WEB_NOTE = """\
Web rows: the overhead a limiter adds to one `GET /` of a minimal app (bare app, app with
ratekeeper, app with the peer, in one process, interleaved round by round), median over rounds
of (time with the limiter) - (time of the bare app), in CPU time of the measuring thread; the
"bare app" row is the app's own time per request. One default limit keyed by client address,
headers on where the library has them (django-ratelimit sends none; the FastAPI case is one
route dependency each on Redis: ratekeeper `Depends(RateLimit(..., store=url))`, fastapi-limiter
`Depends(RateLimiter(limiter=Limiter(RedisBucket)))`). Under uvicorn + wrk (`--wrk`): each app
served by its own uvicorn process, loaded by `wrk -t1 -c8` in turn; the overhead is
1/throughput(with) - 1/throughput(bare).
"""
WEB_PEERS = ("slowapi", "flask-limiter", "django-ratelimit", "fastapi-limiter")
COLORS = {
    "slowapi": "#9467bd",
    "flask-limiter": "#8c564b",
    "django-ratelimit": "#e377c2",
    "fastapi-limiter": "#bcbd22",
    "ratekeeper": "#1f77b4",
    "limits": "#ff7f0e",
    "throttled-py": "#2ca02c",
    "pyrate-limiter": "#d62728",
    "redis-py": "#7f7f7f",
}

MAPPING = f"""\
## What is compared

Every library enforces the same limit, {AMOUNT:,} units per hour, one unit per request: so high
that every request is admitted and the numbers measure the decision path (read the key's state,
decide, write it back), never a cheap denial. Each library keeps one independent budget per key
and is called through its documented one-request API: ratekeeper `RateLimiter.hit(key)` (a full
`Decision` with remaining/reset/retry-after), limits `strategy.hit(item, key)` (a bool),
throttled-py `Throttled.limit(key)` (a result with its state), pyrate-limiter
`Limiter.try_acquire(key, blocking=False)` (a bool).

| family | ratekeeper | limits | throttled-py | pyrate-limiter |
|---|---|---|---|---|
| fixed window | `fixed_window` | `FixedWindowRateLimiter` | `fixed_window` | `FixedWindow` |
| sliding window | `sliding_window` | `SlidingWindowCounterRateLimiter` | `sliding_window` | |
| sliding log (exact) | `sliding_log` | `MovingWindowRateLimiter` | | `SlidingWindowLog` |
| token bucket | `token_bucket` | | `token_bucket` | `TokenBucket` (a `StateBucket`) |
| GCRA | `gcra` | | `gcra` | `GCRA` (a `StateBucket`) |
| leaky bucket | `leaky_bucket` | | `leaking_bucket` | |

Configuration made equivalent: throttled-py's memory store forgets keys beyond 1,024 by default
(`MAX_SIZE`), so it is given room for every key; pyrate-limiter's `Limiter` sends every name to one
shared bucket, so it is given a `BucketFactory` (its extension point for routing) that keeps one
bucket per key. pyrate-limiter is not in the Redis cases (its Redis buckets need one
bucket object per key and their own clock handling; the issue compares limits and throttled-py
there). Redis runs use one redis-py connection per limiter (hiredis parser when installed), the
same server, and the "floor" rows are the raw round trips every decision pays at least once. On
Redis the sliding-log family gets a tenth of the decisions per sample: every library keeps one entry
per admitted request, so on one key the cost of a decision grows with the run.

Ratios ("x ratekeeper") compare a row with ratekeeper's row of the same algorithm: the row's
time (or bytes) divided by ratekeeper's, or ratekeeper's decisions/s divided by the row's; above 1,
ratekeeper leads. They are taken round by round (every library runs once per round, so a burst of
load on the machine weighs on both samples of a pair) and the median is shown. In the hot-key
table the reference is ratekeeper without the cache.
"""


def write_report(
    rows: Sequence[Row], folder: Path, settings: Settings, elapsed: float
) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "benchmarks.md"
    png = folder / "benchmarks.png"
    chart(rows, png)
    md.write_text(markdown(rows, settings, elapsed, png.name))
    return md, png


# ------------------------------------------------------------------------ markdown


def markdown(rows: Sequence[Row], settings: Settings, elapsed: float, png: str) -> str:

    out = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks` (see the README section *Benchmarks*); do not edit "
        "by hand, rerun it.",
        "",
        f"![benchmarks]({png})",
        "",
        "## Summary: ratekeeper against the fastest peer",
        "",
        summary_table(rows),
        "",
        web_summary(rows),
        "",
        "## Machine",
        "",
        machine(settings, elapsed),
        "",
        MAPPING,
    ]
    out += [WEB_NOTE]
    for section in (*SECTIONS, *OPTIONAL_SECTIONS):
        section_rows = [row for row in rows if row.section == section]
        if section_rows:
            out += [f"## {section}", "", section_table(section_rows), ""]
    return "\n".join(out).rstrip() + "\n"


def ratio(row: Row, reference: Row) -> float:
    """How many times ratekeeper's cost ``row`` is (above 1: ratekeeper leads).

    The median of the per-repeat ratios when both were measured in the same repeats: the two
    samples of one repeat ran back to back, so a burst of load on the machine weighs on both,
    where the ratio of two medians could pair a quiet sample with a busy one.
    """
    pairs = list(zip(row.samples, reference.samples, strict=False))
    if len(row.samples) == len(reference.samples) > 1 and all(a > 0 and b > 0 for a, b in pairs):
        if row.unit == "dec/s":
            return statistics.median(b / a for a, b in pairs)
        return statistics.median(a / b for a, b in pairs)
    if row.unit == "dec/s":
        return reference.value / row.value if row.value else float("inf")
    return row.value / reference.value if reference.value else float("inf")


def summary_table(rows: Sequence[Row]) -> str:

    lines = [
        "| case | algorithm | ratekeeper | fastest peer | peer | ratekeeper leads by |",
        "|---|---|---:|---|---:|---:|",
    ]
    for section in SECTIONS:
        for family in FAMILIES:
            group = [r for r in rows if r.section == section and r.family == family]
            ours = [r for r in group if r.library == "ratekeeper"]
            if section.startswith("Redis, hot abusive key"):  # compare the cache with the rest
                cached = [r for r in ours if "local_cache=True" in r.algorithm]
                plain = [r for r in ours if "local_cache=True" not in r.algorithm]
                if cached and plain:
                    lines.append(
                        f"| {section} | {family}, local_cache=True | "
                        f"{fmt(cached[0].value, cached[0].unit)} | ratekeeper without the cache "
                        f"| {fmt(plain[0].value, plain[0].unit)} | "
                        f"**{ratio(plain[0], cached[0]):.0f}x** |"
                    )
                ours = plain
            peers = [r for r in group if r.library not in ("ratekeeper", "redis-py")]
            if not ours or not peers:
                continue
            best_peer = min(peers, key=lambda r: ratio(r, ours[0]))
            lines.append(
                f"| {section} | {family} | {fmt(ours[0].value, ours[0].unit)} | "
                f"{best_peer.library} {best_peer.algorithm} | "
                f"{fmt(best_peer.value, best_peer.unit)} | "
                f"**{ratio(best_peer, ours[0]):.2f}x** |"
            )
    floors = {r.algorithm: r for r in rows if r.family == "floor"}
    for r in rows:
        floor = floors.get("EVALSHA (floor)")
        if r.library == "ratekeeper" and r.section.startswith("Redis, sync") and floor:
            same = [f for f in rows if f.family == "floor" and f.section == r.section]
            if same:
                lines.append(
                    f"| {r.section} | {r.family} | {fmt(r.value, r.unit)} | "
                    f"raw EVALSHA floor | {fmt(same[0].value, same[0].unit)} | "
                    f"ratekeeper = {r.value / same[0].value:.2f}x the floor |"
                )
    return "\n".join(lines)


def web_summary(rows: Sequence[Row]) -> str:
    """Each framework's ratekeeper overhead against the target (10 µs) and against its peer."""
    lines = [
        "## Summary: web middleware overhead (target: at most 10 µs, 10x less than the peer)",
        "",
        "| case | framework | bare app | ratekeeper adds | peer | peer adds | peer / ratekeeper |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for section in (WEB, WEB_WRK):
        for family in dict.fromkeys(r.family for r in rows if r.section == section):
            group = [r for r in rows if r.section == section and r.family == family]
            bare = next((r for r in group if r.library == BARE), None)
            ours = next((r for r in group if r.library == "ratekeeper"), None)
            if bare is None or ours is None:
                continue
            peers = [r for r in group if r.library not in (BARE, "ratekeeper")] or [None]
            for peer in peers:
                peer_cells = "| — | — | — |"
                if peer is not None:
                    peer_cells = (
                        f"| {peer.library} | {fmt(peer.value, peer.unit)} | "
                        f"**{ratio(peer, ours):.1f}x** |"
                    )
                lines.append(
                    f"| {section.split(' (')[0].replace('Web middleware overhead, ', '')} | "
                    f"{family} | {fmt(bare.value, bare.unit)} | "
                    f"{fmt(ours.value, ours.unit)} {peer_cells}"
                )
    return "\n".join(lines) if len(lines) > 4 else ""


def section_table(rows: Sequence[Row]) -> str:
    unit = rows[0].unit
    direction = "higher is better" if unit == "dec/s" else "lower is better"
    lines = [
        f"| algorithm | library | library's algorithm | median ({direction}) | spread | "
        "x ratekeeper |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        reference = next(
            (r for r in rows if r.family == row.family and r.library == "ratekeeper"), None
        )
        comparable = reference is not None and row.library != BARE
        shown = f"{ratio(row, reference):.2f}" if comparable else "—"  # type: ignore[arg-type]
        lines.append(
            f"| {row.family} | {row.library} | {row.algorithm} | {fmt(row.value, unit)} | "
            f"±{row.spread * 100:.0f}% | {shown} |"
        )
    return "\n".join(lines)


def machine(settings: Settings, elapsed: float) -> str:
    versions = []
    for dist in (
        *("ratekeeper", "limits", "throttled-py", "pyrate-limiter", "redis", "hiredis"),
        *("slowapi", "flask-limiter", "django-ratelimit", "fastapi-limiter"),
        *("starlette", "fastapi", "flask", "django", "aiohttp", "uvicorn"),
    ):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    server = shutil.which("redis-server")
    if server:
        try:
            text = subprocess.run(
                [server, "--version"], capture_output=True, text=True, timeout=5
            ).stdout
            versions.append(text.split(" sha=")[0].strip())
        except (OSError, subprocess.SubprocessError):
            pass
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"- CPU: {cpu_model()}, {os.cpu_count()} cores",
            f"- Python {platform.python_version()} ({platform.python_implementation()}), "
            f"{platform.system()} {platform.release()}",
            f"- Versions: {', '.join(versions)}",
            f"- Run: {when}, {elapsed:.0f} s; {settings.repeats} repeats after a warm-up of "
            f"{settings.warmup} decisions, libraries interleaved (order rotated each repeat); "
            f"{settings.mem_n:,} decisions per memory sample, {settings.threads_n:,} per "
            f"threaded sample, {settings.redis_n:,} per Redis sample, {settings.async_n:,} per "
            f"asyncio sample; spread = (max - min) / median.",
        ]
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------ chart


def chart(rows: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [s for s in CHART_SECTIONS if any(r.section == s for r in rows)]
    if not sections:
        sections = sorted({r.section for r in rows})[:4] or ["(no data)"]
    fig, axes = plt.subplots(len(sections), 1, figsize=(11, 3.6 * len(sections)), squeeze=False)
    for ax, section in zip(axes[:, 0], sections, strict=True):
        group = [r for r in rows if r.section == section and r.library != BARE]
        order = ("floor", *FAMILIES, *dict.fromkeys(r.family for r in group))
        families = [f for f in dict.fromkeys(order) if any(r.family == f for r in group)]
        series = _series(group)
        width = 0.8 / max(1, len(series))
        unit = group[0].unit if group else "ns"
        scale = 1000.0 if unit == "ns" else 1.0
        for j, (label, library, variant) in enumerate(series):
            xs, ys = [], []
            for i, family in enumerate(families):
                # several rows per (family, library) in one series happen only for the floor
                match = [
                    r
                    for r in group
                    if r.family == family
                    and r.library == library
                    and (variant is None or r.algorithm == variant)
                ]
                if match:
                    xs.append(i + (j - len(series) / 2 + 0.5) * width)
                    ys.append(match[0].value / scale)
            if xs:
                # a library's second and later variants: its colour, hatched and lighter
                later = any(other[1] == library for other in series[:j])
                ax.bar(
                    xs,
                    ys,
                    width,
                    label=label,
                    color=COLORS.get(library),
                    alpha=0.45 if later else 1.0,
                    hatch="//" if later else None,
                )
        ax.set_xticks(range(len(families)))
        ax.set_xticklabels(families)
        label = {"ns": "µs per decision (lower is better)", "dec/s": "decisions/s (higher)"}
        if section == WEB:
            label = {"ns": "µs added per request (lower is better)"}
        ax.set_ylabel(label.get(unit, unit))
        ax.set_title(section)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncols=5)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _series(group: Sequence[Row]) -> list[tuple[str, str, str | None]]:
    """The bars of a chart panel: one per library (label, library, None), or, for a section that
    compares variants of one library (local quota or not, pipelined or not, sizes), one per
    (library, variant) (label, library, variant)."""
    libraries = [*LIBRARIES, "redis-py", *WEB_PEERS]
    present = [lib for lib in libraries if any(r.library == lib for r in group)]
    variants = any(
        len({r.algorithm for r in group if r.family == f and r.library == lib}) > 1
        for f in {r.family for r in group if r.family != "floor"}
        for lib in present
    )
    if not variants:
        return [(lib, lib, None) for lib in present]
    found: list[tuple[str, str, str | None]] = []
    for lib in present:
        for variant in dict.fromkeys(r.algorithm for r in group if r.library == lib):
            found.append((f"{lib}: {variant}", lib, variant))
    return found
