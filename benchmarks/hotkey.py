"""One hot key on Redis: decisions per second with leased local quota (``local_quota=100``)
against one round trip per request (no local quota).

Both contenders are the same `RateLimiter` (token bucket, a limit far above what the run spends,
so every decision is an admission), each on its own store built from the same URL and its own
key. They are measured interleaved, round by round (the order alternating), with 1 thread and
with 4 threads sharing the key; the report gives the median, the spread and the ratio (the
median of the per-round ratios).

    PYTHONPATH=.:src .venv/bin/python -m benchmarks.hotkey [--smoke] [--redis-url URL]

Without ``--redis-url`` a private redis-server is started on a free loopback port.
"""

from __future__ import annotations

import argparse
import statistics
import uuid
from collections.abc import Sequence

from benchmarks.adapters import Contender
from benchmarks.measure import summarize, threads_rate
from benchmarks.redis_server import RedisServer
from benchmarks.results import FULL, SMOKE, Settings, log

BATCH = 100  # units per batch
LIMIT = "1000000000/hour"  # never reached: every decision is an admission
THREADS = (1, 4)
SAMPLE_FACTOR = 5  # decisions per sample: this many times the settings' cache_n


def contenders(url: str) -> list[Contender]:
    """The two limiters, built alike but for ``local_quota`` (the leased one first: it is the
    report's reference row, so the other's ratio says how many times it leads)."""
    from ratekeeper import RateLimiter

    built = []
    for batch in (BATCH, None):
        limiter = RateLimiter(LIMIT, algorithm="token_bucket", store=url, local_quota=batch)
        name = (
            "token_bucket, no local quota"
            if batch is None
            else f"token_bucket, local_quota={batch}"
        )
        built.append(Contender("ratekeeper", name, limiter.hit, limiter.close))
    return built


def measure(url: str, settings: Settings) -> list[tuple[str, Contender, list[float]]]:
    """(family, contender, decisions/s per round) for each thread count and contender."""
    out = []
    n = SAMPLE_FACTOR * settings.cache_n
    for threads in THREADS:
        family = f"{threads} thread{'s' if threads > 1 else ''}, 1 key"
        built = contenders(url)
        keys = [f"hot:{uuid.uuid4().hex[:12]}" for _ in built]
        samples: list[list[float]] = [[] for _ in built]
        try:
            for contender, key in zip(built, keys, strict=True):
                threads_rate(contender.hit, [key] * settings.warmup, threads)
            for repeat in range(settings.repeats):
                order = range(len(built)) if repeat % 2 == 0 else reversed(range(len(built)))
                for i in order:
                    samples[i].append(threads_rate(built[i].hit, [keys[i]] * n, threads))
        finally:
            for contender in built:
                contender.close()
        out += [(family, c, s) for c, s in zip(built, samples, strict=True)]
    return out


def speedups(rows: Sequence[tuple[str, Contender, list[float]]]) -> dict[str, float]:
    """Per family: the median of the per-round ratios local_quota / no local quota."""
    by_family: dict[str, list[list[float]]] = {}
    for family, _, samples in rows:
        by_family.setdefault(family, []).append(samples)  # leased first, then plain
    return {
        family: statistics.median(a / b for a, b in zip(leased, plain, strict=True))
        for family, (leased, plain) in by_family.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotkey", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny iteration counts (a check)")
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    server = RedisServer() if args.redis_url is None else None
    url = args.redis_url if server is None else server.__enter__()
    try:
        rows = measure(url, settings)
    finally:
        if server is not None:
            server.__exit__()
    for family, contender, samples in rows:
        median, spread = summarize(samples)
        log(f"  {family:18} {contender.algorithm:36} {median:>12,.0f}/s  ±{spread * 100:4.1f}%")
    for family, ratio in speedups(rows).items():
        log(f"  {family:18} local_quota={BATCH} / no local quota: {ratio:.1f}x")


if __name__ == "__main__":
    main()
