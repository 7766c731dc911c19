"""The ``ratekeeper`` command: ``demo`` (each algorithm admitting and denying a burst),
``migrate URL`` (a PostgreSQL store's schema), ``check-config [PATH]`` (check a configuration file
and print what it defines) and ``limiters`` (the limiters of the file zero configuration finds)."""

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
    args = parser.parse_args(argv)
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
