"""The benchmark command: ``python -m benchmarks [--smoke] [--redis-url URL] [...]``.

Each case builds every library that offers it, warms them up, then measures them interleaved
(the order rotates every repeat), several repeats, and reports the median, the spread and the
ratio to ratekeeper.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import adapters as ad
from benchmarks import cluster, hotkey, scale, web
from benchmarks.adapters import FAMILIES, Contender, Factory
from benchmarks.measure import (
    bytes_per_key,
    key_sequence,
    ns_per_decision,
    summarize,
    tasks_rate,
    threads_rate,
)
from benchmarks.redis_server import RedisServer
from benchmarks.report import write_report
from benchmarks.results import (
    CACHE,
    CLUSTER,
    FULL,
    HOTKEY,
    MEM_KEY,
    MEM_MANY,
    MEM_ONE,
    RED_ASYNC,
    RED_MANY,
    RED_ONE,
    SCALE_BYTES,
    SCALE_HIT,
    SMOKE,
    THR_MANY,
    THR_ONE,
    UNITS,
    WEB,
    WEB_WRK,
    Row,
    Settings,
    fmt,
    log,
)

ROOT = Path(__file__).resolve().parent.parent


class Runner:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.rows: list[Row] = []
        self.run_id = uuid.uuid4().hex[:8]

    def add(self, section: str, family: str, contender: Contender, samples: Sequence[float]) -> Row:
        median, spread = summarize(samples)
        row = Row(
            section,
            family,
            contender.library,
            contender.algorithm,
            median,
            spread,
            UNITS[section],
            list(samples),
        )
        self.rows.append(row)
        log(
            f"  {family:15} {contender.library:15} {contender.algorithm:28} "
            f"{fmt(median, row.unit):>16}  ±{spread * 100:4.1f}%"
        )
        return row

    # -------------------------------------------------------------------- generic drivers

    def compare_sync(
        self,
        section: str,
        family: str,
        factories: Sequence[Factory | None],
        keys: int,
        n: int,
        timer: Callable[[Callable[[str], Any], Sequence[str]], float] = ns_per_decision,
    ) -> None:
        self.compare_sync_many(section, [(family, build, n) for build in factories], keys, timer)

    def compare_sync_many(
        self,
        section: str,
        entries: Sequence[tuple[str, Factory | None, int]],
        keys: int,
        timer: Callable[[Callable[[str], Any], Sequence[str]], float] = ns_per_decision,
    ) -> None:
        """Measure every (family, factory, decisions per sample) of ``entries`` interleaved:
        one sample of each per round, the order rotated every round."""
        built: list[tuple[str, Contender, list[str]]] = []
        for family, build, n in entries:
            seq = key_sequence(keys, n, f"{self.run_id}:{family}")
            contender = _built(build)
            warm = seq[: self.s.warmup]
            if contender is not None and _works(
                contender, lambda c, w=warm: ns_per_decision(c.hit, w)
            ):
                built.append((family, contender, seq))
        samples: list[list[float]] = [[] for _ in built]
        try:
            for repeat in range(self.s.repeats):
                for i in _rotation(len(built), repeat):
                    samples[i].append(timer(built[i][1].hit, built[i][2]))
        finally:
            for _, contender, _seq in built:
                contender.close()
        for (family, contender, _seq), values in zip(built, samples, strict=True):
            self.add(section, family, contender, values)

    def compare_async(
        self, section: str, family: str, factories: Sequence[Factory | None], n: int, tasks: int
    ) -> None:
        asyncio.run(self._compare_async(section, family, factories, n, tasks))

    async def _compare_async(
        self, section: str, family: str, factories: Sequence[Factory | None], n: int, tasks: int
    ) -> None:
        seq = key_sequence(10_000, n, f"{self.run_id}:{family}")
        contenders = []
        for build in factories:
            contender = _built(build)
            if contender is None:
                continue
            try:
                await tasks_rate(contender.hit, seq[: self.s.warmup], tasks)
            except Exception as exc:
                log(f"  {family:15} {contender.library:15} FAILED, left out: {exc!r:.200}")
                continue
            contenders.append(contender)
        samples: list[list[float]] = [[] for _ in contenders]
        try:
            for repeat in range(self.s.repeats):
                for i in _rotation(len(contenders), repeat):
                    samples[i].append(await tasks_rate(contenders[i].hit, seq, tasks))
        finally:
            for contender in contenders:
                result = contender.close()
                if asyncio.iscoroutine(result):
                    await result
        for contender, values in zip(contenders, samples, strict=True):
            self.add(section, family, contender, values)

    # -------------------------------------------------------------------- the cases

    def memory(self) -> None:
        for section, keys in ((MEM_ONE, 1), (MEM_MANY, 10_000)):
            log(f"== {section} (ns per decision, lower is better)")
            for family in FAMILIES:
                self.compare_sync(section, family, memory_factories(family), keys, self.s.mem_n)

    def threads(self) -> None:
        def timer(hit: Callable[[str], Any], seq: Sequence[str]) -> float:
            return threads_rate(hit, seq, 8)

        for section, keys in ((THR_ONE, 1), (THR_MANY, 10_000)):
            log(f"== {section} (decisions per second, higher is better)")
            for family in FAMILIES:
                factories = memory_factories(family)
                self.compare_sync(section, family, factories, keys, self.s.threads_n, timer)

    def memory_per_key(self) -> None:
        log(f"== {MEM_KEY} (bytes per key, tracemalloc, lower is better)")
        keys = self.s.keys_for_memory
        for family in FAMILIES:
            for build in memory_factories(family):
                if build is None:
                    continue
                contender = build()
                try:
                    value = bytes_per_key(contender, keys)
                finally:
                    contender.close()
                self.add(MEM_KEY, family, contender, [value])

    def redis_sync(self, url: str) -> None:
        floors = [ad.redis_floor(url, command) for command in ("EVALSHA", "PING", "INCR")]
        for section, keys in ((RED_ONE, 1), (RED_MANY, 10_000)):
            log(f"== {section} (ns per decision, lower is better; every case interleaved)")
            entries: list[tuple[str, Factory | None, int]] = [
                ("floor", build, self.s.redis_n) for build in floors
            ]
            for family in FAMILIES:
                # Log algorithms keep one entry per admitted request: on one key with this
                # limit their cost grows with the run, so they get fewer decisions.
                n = self.s.redis_n // LOG_DIVISOR if family == "sliding_log" else self.s.redis_n
                entries += [(family, build, max(n, 10)) for build in redis_factories(family, url)]
            self.compare_sync_many(section, entries, keys)

    def redis_async(self, url: str) -> None:
        log(f"== {RED_ASYNC} (decisions per second, higher is better)")
        self.compare_async(RED_ASYNC, "floor", [ad.redis_floor_async(url)], self.s.async_n, 50)
        for family in FAMILIES:
            factories = [
                ad.ratekeeper_async(family, url) if has_redis_store() else None,
                ad.limits_async(family, url),
                ad.throttled_async(family, url),
            ]
            self.compare_async(RED_ASYNC, family, factories, self.s.async_n, 50)

    def local_cache(self, url: str) -> None:
        """One key far over its limit (10 per hour), hammered: every decision is a denial.

        ratekeeper with and without ``local_cache=True``, and the peers on the same key.
        """
        log(f"== {CACHE} (decisions per second, higher is better)")
        if not has_redis_store():
            log("  (skipped: ratekeeper.stores.redis is not available)")
            return
        from ratekeeper import Limit, RateLimiter

        def ours(family: str, cache: bool) -> Factory:
            def build() -> Contender:
                limiter = RateLimiter(
                    Limit(ABUSED, per=PER_HOUR), algorithm=family, store=url, local_cache=cache
                )
                name = f"{family}, local_cache=True" if cache else f"{family}, no cache"
                return Contender("ratekeeper", name, limiter.hit, limiter.close)

            return build

        for family in ("fixed_window", "token_bucket", "gcra"):
            factories = [
                ours(family, False),
                ours(family, True),
                ad.limits_(family, url, ABUSED),
                ad.throttled(family, url, ABUSED),
            ]
            contenders = [c for c in map(_built, factories) if c is not None]
            key = f"{self.run_id}:abusive:{family}"
            seq = [key] * self.s.cache_n
            samples: list[list[float]] = [[] for _ in contenders]
            try:
                for contender in contenders:
                    for _ in range(2 * ABUSED):  # spend the budget: every later hit is denied
                        contender.hit(key)
                for repeat in range(self.s.repeats):
                    for i in _rotation(len(contenders), repeat):
                        samples[i].append(1e9 / ns_per_decision(contenders[i].hit, seq))
            finally:
                for contender in contenders:
                    contender.close()
            for contender, values in zip(contenders, samples, strict=True):
                self.add(CACHE, family, contender, values)

    def web(self, url: str | None) -> None:
        """Each framework's apps (bare, ratekeeper, peer) interleaved round by round; a row's
        samples are its per-round overheads over the bare app."""
        log(f"== {WEB} (overhead per request over the bare app, CPU time, lower is better)")
        cases: list[tuple[str, Callable[[], list[web.WebApp]]]] = [
            ("starlette", web.starlette_apps),
            ("flask", web.flask_apps),
            ("django", web.django_apps),
            ("aiohttp", web.aiohttp_apps),
        ]
        if url is not None and has_redis_store():
            cases.append(("fastapi+redis", lambda: web.fastapi_redis_apps(url)))
        loop = asyncio.new_event_loop()
        try:
            for family, build in cases:
                try:
                    apps = build()
                    for app in apps:
                        web.cpu_ns_per_request(app, max(self.s.warmup // 10, 5), loop)
                except Exception as exc:
                    log(f"  {family:15} FAILED, left out: {exc!r:.200}")
                    continue
                times: list[list[float]] = [[] for _ in apps]
                for repeat in range(self.s.repeats):
                    for i in _rotation(len(apps), repeat):
                        times[i].append(web.cpu_ns_per_request(apps[i], self.s.web_n, loop))
                self._web_rows(WEB, family, apps, times)
                for app in apps:
                    app.close()
        finally:
            loop.close()

    def web_wrk(self) -> None:
        """The Starlette apps served by uvicorn, each loaded by wrk in turn, round by round."""
        log(f"== {WEB_WRK} (1/throughput with - without, per request, lower is better)")
        if not web.has_wrk():
            log("  (skipped: wrk is not installed)")
            return
        kinds = ["bare", "ratekeeper", "slowapi"]
        with web.served(kinds) as ports:
            for port in ports.values():
                web.wrk_requests_per_second(port, 1)  # warm up
            times: list[list[float]] = [[] for _ in kinds]
            for repeat in range(max(3, self.s.repeats // 2)):
                for i in _rotation(len(kinds), repeat):
                    rate = web.wrk_requests_per_second(ports[kinds[i]])
                    times[i].append(1e9 / rate)
        apps = [web.WebApp(kind, WRK_WHAT[kind], lambda: None) for kind in kinds]
        self._web_rows(WEB_WRK, "starlette", apps, times)

    def _web_rows(
        self, section: str, family: str, apps: Sequence[web.WebApp], times: list[list[float]]
    ) -> None:
        bare = next(t for app, t in zip(apps, times, strict=True) if app.library == "bare")
        for app, values in zip(apps, times, strict=True):
            if app.library == "bare":
                self.add(section, family, Contender(BARE, app.what, _nothing), values)
                continue
            overheads = [v - b for v, b in zip(values, bare, strict=True)]
            self.add(section, family, Contender(app.library, app.what, _nothing), overheads)

    def scale(self, sizes: Sequence[int], families: Sequence[str]) -> None:
        """Bytes per key (resident memory) and hit time at each size, one fresh process per
        (library, size) (see :mod:`benchmarks.scale`)."""
        log(f"== {SCALE_BYTES} / {SCALE_HIT} at {', '.join(f'{n:,}' for n in sizes)} keys")
        for family in families:
            for library in scale.LIBRARIES:
                skip_after = False
                for size in sizes:
                    if skip_after:
                        log(f"  {family:15} {library:15} {size:>12,} keys: left out ({skip_after})")
                        continue
                    result = scale.measure_in_subprocess(library, family, size)
                    if result is None:
                        break
                    if "error" in result:
                        log(f"  {family:15} {library:15} {size:>12,} keys: {result['error']}")
                        break
                    name = f"{result['algorithm']} @ {size:,} keys"
                    contender = Contender(library, name, _nothing)
                    self.add(SCALE_BYTES, family, contender, [result["bytes_per_key"]])
                    self.add(SCALE_HIT, family, contender, result["hit_ns"])
                    skip_after = scale.too_big(result, size, sizes)


BARE = "bare app"  # the library name of a web case's app without a limiter
WRK_WHAT = {
    "bare": "Starlette under uvicorn",
    "ratekeeper": "RateLimitMiddleware",
    "slowapi": "SlowAPIASGIMiddleware",
}


def _nothing() -> None:
    return None


ABUSED = 10  # the abusive key's limit, per hour
LOG_DIVISOR = 10  # fewer decisions per sample for the sliding log on Redis
PER_HOUR = 3600


def _built(build: Factory | None) -> Contender | None:
    """Build a contender; one that cannot be built is reported and left out."""
    if build is None:
        return None
    try:
        return build()
    except Exception as exc:
        log(f"  a contender could not be built, left out: {exc!r:.200}")
        return None


def _works(contender: Contender, warm_up: Callable[[Contender], object]) -> bool:
    """Warm a contender up; one that fails is reported and left out (a broken store under
    development must not stop the other measurements)."""
    try:
        warm_up(contender)
    except Exception as exc:
        log(f"  {contender.library:15} {contender.algorithm:28} FAILED, left out: {exc!r:.200}")
        with contextlib.suppress(Exception):
            contender.close()
        return False
    return True


def _rotation(count: int, repeat: int) -> list[int]:
    return [(repeat + i) % count for i in range(count)] if count else []


def has_redis_store() -> bool:
    try:
        return importlib.util.find_spec("ratekeeper.stores.redis") is not None
    except ImportError:
        return False


def memory_factories(family: str) -> list[Factory | None]:
    return [ad.ratekeeper(family), ad.limits_(family), ad.throttled(family), ad.pyrate(family)]


def redis_factories(family: str, url: str) -> list[Factory | None]:
    return [
        ad.ratekeeper(family, url) if has_redis_store() else None,
        ad.limits_(family, url),
        ad.throttled(family, url),
    ]


# ------------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny iteration counts (a check)")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="use this Redis (default: start a private redis-server on a free loopback port)",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis cases")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="WORD",
        help="run only the sections whose title contains WORD (repeatable; e.g. memory, redis)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write benchmarks.md and benchmarks.png into this folder "
        "(default: docs/ for a full run, nothing for --smoke)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument(
        "--wrk",
        action="store_true",
        help="also measure the Starlette middlewares under uvicorn with wrk (about a minute)",
    )
    parser.add_argument(
        "--scale",
        default=None,
        metavar="SIZES",
        help="also measure the memory store at scale: comma-separated key counts, e.g. "
        "1000000,10000000 (minutes; a fresh process per library and size)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also measure asyncio decisions/s on private 1- and 3-master Redis Clusters, 1 and 2 "
        "client processes (benchmarks/cluster.py; minutes)",
    )
    parser.add_argument(
        "--scale-families",
        default="fixed_window,gcra",
        metavar="FAMILIES",
        help="the algorithm families of --scale (default: fixed_window,gcra)",
    )
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    runner = Runner(settings)
    started = time.perf_counter()

    def wanted(*sections: str) -> bool:
        if not args.only:
            return True
        return any(w.lower() in s.lower() for w in args.only for s in sections)

    def lap(what: str) -> None:
        log(f"   ({what}: {time.perf_counter() - started:.0f} s from the start)")

    if wanted(MEM_ONE, MEM_MANY):
        runner.memory()
        lap("memory")
    if wanted(THR_ONE, THR_MANY):
        runner.threads()
        lap("threads")
    if wanted(MEM_KEY):
        runner.memory_per_key()
        lap("bytes per key")
    redis_sections = (RED_ONE, RED_MANY, RED_ASYNC, CACHE, HOTKEY, WEB)
    if args.no_redis and wanted(WEB):
        runner.web(None)
        lap("web")
    if args.wrk and wanted(WEB_WRK):
        runner.web_wrk()
        lap("web under wrk")
    if args.scale and wanted(SCALE_BYTES, SCALE_HIT):
        sizes = [int(size) for size in args.scale.split(",")]
        runner.scale(sizes, args.scale_families.split(","))
        lap("memory at scale")
    if args.cluster and wanted(CLUSTER):
        log(f"== {CLUSTER} (decisions per second, higher is better)")
        for family, contender, samples in cluster.measure(settings):
            runner.add(CLUSTER, family, contender, samples)
        lap("redis cluster")
    if not args.no_redis and wanted(*redis_sections):
        url = args.redis_url or os.environ.get("RATEKEEPER_BENCH_REDIS_URL")
        server = RedisServer() if url is None else None
        if server is not None:
            url = server.__enter__()
            log(f"== started redis-server at {url}")
        assert url is not None
        try:
            if wanted(RED_ONE, RED_MANY):
                runner.redis_sync(url)
                lap("redis sync")
            if wanted(RED_ASYNC):
                runner.redis_async(url)
                lap("redis asyncio")
            if wanted(CACHE):
                runner.local_cache(url)
            if wanted(HOTKEY):
                log(f"== {HOTKEY} (decisions per second, higher is better)")
                for family, contender, samples in hotkey.measure(url, settings):
                    runner.add(HOTKEY, family, contender, samples)
            if wanted(WEB):
                runner.web(url)
                lap("web")
        finally:
            if server is not None:
                server.__exit__()
                log("== stopped redis-server")
    elapsed = time.perf_counter() - started
    log(f"== done in {elapsed:.1f} s")

    output = args.output if args.output is not None else (None if args.smoke else ROOT / "docs")
    if output is not None:
        md, png = write_report(runner.rows, output, settings, elapsed)
        log(f"== wrote {md} and {png}")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(row) for row in runner.rows], indent=1))
    return runner.rows


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so the private redis-server is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run(argv if argv is not None else sys.argv[1:])
    return 0
