"""The ``ratekeeper`` command: ``demo`` (each algorithm admitting and denying a burst),
``migrate URL`` (a PostgreSQL store's schema), ``check-config [PATH]`` (check a configuration file
and print what it defines), ``limiters`` (the limiters of the file zero configuration finds),
``simulate --limits L FILE`` (replay traffic through each algorithm) and ``loadtest URL``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.limiter import RateLimiter
from ratekeeper.testing import FakeClock


def demo(out: object = None) -> None:
    """Print, per algorithm, a burst of 7 requests against "5/second", then one a second later."""
    write = print if out is None else out.write  # type: ignore[attr-defined]
    write("ratekeeper demo: a burst of 7 requests at once against '5/second', memory store\n")
    for name in ALGORITHMS:
        clock = FakeClock()
        limiter = RateLimiter("5/second", algorithm=name, clock=clock)
        marks = []
        delays = []
        last = None
        for _ in range(7):
            last = limiter.hit("demo")
            marks.append("✓" if last.allowed else "✗")
            if last.allowed:
                delays.append(f"{last.delay:g}")
        assert last is not None
        denial = last
        clock.advance(denial.retry_after)
        after = limiter.hit("demo")
        line = (
            f"  {name:<15} {' '.join(marks)}   denied: retry_after={denial.retry_after:.3f}s"
            f"  → after waiting it: {'allowed' if after.allowed else 'denied'}"
        )
        if name == "leaky_bucket":
            line += f"  (delays {', '.join(delays)} s space the burst out)"
        write(line + "\n")
    limiter = RateLimiter("5/second;100/hour", clock=FakeClock())
    for _ in range(5):
        limiter.hit("api")
    denial = limiter.hit("api")
    write("\nheaders of a denial under '5/second;100/hour' (token bucket):\n")
    for field, value in denial.headers().items():
        write(f"  {field}: {value}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ratekeeper", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="show every algorithm admitting and denying a burst")
    migrate = sub.add_parser("migrate", help="create or upgrade a PostgreSQL store's schema")
    migrate.add_argument("url", help="postgresql://user:password@host/db")
    migrate.add_argument("--schema", default="public")
    migrate.add_argument("--table-prefix", default="ratekeeper_")
    check = sub.add_parser(
        "check-config", help="check a configuration file and print the limiters it defines"
    )
    check.add_argument(
        "path", nargs="?", help="the file (default: $RATEKEEPER_CONFIG, ratekeeper.toml, ...)"
    )
    sub.add_parser("limiters", help="list the limiters of the configuration file found")
    simulate = sub.add_parser(
        "simulate", help="replay a CSV or access log through each algorithm and report"
    )
    simulate.add_argument("file", help="CSV of timestamp,key[,cost] or a common/combined log")
    simulate.add_argument("--limits", required=True, help='e.g. "100/minute" or "10/s;500/hour"')
    simulate.add_argument("--algorithm", default="all", help="one algorithm, or all (default)")
    simulate.add_argument("--key", default="host", help="for logs: host (default), user or path")
    simulate.add_argument("--chart", metavar="PNG", help="write admitted vs offered load here")
    load = sub.add_parser("loadtest", help="send N requests to a URL and report statuses")
    load.add_argument("url")
    load.add_argument("--requests", type=int, default=100)
    load.add_argument("--concurrency", type=int, default=10)
    load.add_argument("--method", default="GET")
    load.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    args = parser.parse_args(argv)
    if args.command == "simulate":
        return _simulate(args.file, args.limits, args.algorithm, args.key, args.chart)
    if args.command == "loadtest":
        return _loadtest(args.url, args.requests, args.concurrency, args.method, args.timeout)
    if args.command == "migrate":
        return _migrate(args.url, args.schema, args.table_prefix)
    if args.command in ("check-config", "limiters"):
        return _show_config(args.command, getattr(args, "path", None))
    if args.command == "demo":
        try:
            demo(sys.stdout)
        except BrokenPipeError:  # `ratekeeper demo | head`
            sys.stderr.close()
    return 0


def _simulate(path: str, limits: str, algorithm: str, key: str, chart: str | None) -> int:
    """``ratekeeper simulate``: see `ratekeeper.simulate`."""
    from ratekeeper import simulate
    from ratekeeper.algorithms import ALGORITHMS
    from ratekeeper.errors import ConfigError

    try:
        requests, kind = simulate.read_requests(path, key)
        algorithms = list(ALGORITHMS) if algorithm == "all" else [algorithm]
        result = simulate.simulate(requests, limits, algorithms)
        result.source = f"{path}, {kind}"
        print(simulate.report(result), end="")
        if chart:
            simulate.chart(result, chart)
            print(f"chart: {chart}")
    except (ConfigError, OSError) as exc:
        print(f"ratekeeper simulate: {exc}", file=sys.stderr)
        return 1
    return 0


def _loadtest(url: str, requests: int, concurrency: int, method: str, timeout: float) -> int:
    """``ratekeeper loadtest``: see `ratekeeper.loadtest`."""
    from ratekeeper import loadtest
    from ratekeeper.errors import ConfigError

    try:
        result = loadtest.loadtest(url, requests, concurrency, method=method, timeout=timeout)
    except ConfigError as exc:
        print(f"ratekeeper loadtest: {exc}", file=sys.stderr)
        return 1
    print(loadtest.format_result(result, url), end="")
    return 0


def _migrate(url: str, schema: str, table_prefix: str) -> int:
    """``ratekeeper migrate URL``: apply the PostgreSQL schema now (idempotent), e.g. as the
    owner role at deploy time, so that app servers can run with ``auto_migrate=False``."""
    from ratekeeper.errors import ConfigError, StoreUnavailable
    from ratekeeper.stores.postgres import PostgresStore

    try:
        store = PostgresStore.from_url(url, schema=schema, table_prefix=table_prefix)
        try:
            changed = store.migrate()
        finally:
            store.close()
    except (ConfigError, StoreUnavailable) as exc:
        print(f"ratekeeper migrate: {exc}", file=sys.stderr)
        return 1
    print("schema applied" if changed else "schema already current")
    return 0


def _show_config(command: str, path: str | None) -> int:
    """``check-config``: load the file (every check), then print its stores and limiters.
    ``limiters``: one line per limiter of the discovered file."""
    from ratekeeper.config import DISCOVERY
    from ratekeeper.errors import ConfigError
    from ratekeeper.registry import Registry

    registry = Registry(discover=False)
    try:
        found = registry.load_config(path)
    except ConfigError as exc:
        print(f"ratekeeper {command}: {exc}", file=sys.stderr)
        return 1
    if found is None and command == "check-config":
        print(
            f"ratekeeper {command}: no configuration file: $RATEKEEPER_CONFIG is not set and "
            f"there is no {', '.join(DISCOVERY)} (with [tool.ratekeeper]) here",
            file=sys.stderr,
        )
        return 1
    limiters = registry.list_limiters()
    if command == "limiters":
        for name, settings in limiters.items():
            print(f"{name}\t{settings['limits']}\t{settings['algorithm']}\t{settings['store']}")
        return 0
    print(f"{found}: ok")
    print("stores:")
    for name, settings in registry.list_stores().items():
        print(f"  {name}: {_fields(settings)}")
    print("limiters:")
    for name, settings in limiters.items():
        print(f"  {name}: {_fields(settings)}")
    return 0


def _fields(settings: dict[str, object]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in settings.items() if value is not None)
