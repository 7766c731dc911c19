"""``python -m ratekeeper demo``: each algorithm admitting and denying a burst, memory store."""

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
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return _migrate(args.url, args.schema, args.table_prefix)
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
