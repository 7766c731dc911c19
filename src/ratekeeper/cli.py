"""The ``ratekeeper`` command: ``demo`` (each algorithm admitting and denying a burst),
``migrate URL`` (a PostgreSQL store's schema, a DynamoDB store's table), ``check-config [PATH]``
(check a configuration file and print what it defines), ``limiters`` (the limiters of the file
zero configuration finds), ``simulate --limits L FILE`` (replay traffic through each algorithm),
``loadtest URL``, and ``serve`` (the admin app and the decision service), ``inspect NAME KEY``,
``reset NAME KEY``."""

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
    migrate = sub.add_parser(
        "migrate", help="create or upgrade a PostgreSQL store's schema or a DynamoDB store's table"
    )
    migrate.add_argument(
        "url", help="postgresql://user:password@host/db or dynamodb://REGION/TABLE"
    )
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
    _add_admin_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.config, args.host, args.port, args.token_file, args.log_level)
    if args.command in ("inspect", "reset"):
        return _key_command(
            args.command, args.name, args.key, args.config, getattr(args, "cost", 1)
        )
    if args.command == "simulate":
        return _simulate(args.file, args.limits, args.algorithm, args.key, args.chart)
    if args.command == "loadtest":
        return _loadtest(args.url, args.requests, args.concurrency, args.method, args.timeout)
    if args.command == "migrate" and args.url.lower().startswith("dynamodb://"):
        return _migrate_dynamodb(args.url)
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


def _migrate_dynamodb(url: str) -> int:
    """``ratekeeper migrate dynamodb://REGION/TABLE``: create the table (on-demand) and turn its
    TTL on, each only when missing; running it again changes nothing."""
    from ratekeeper.errors import ConfigError, StoreUnavailable
    from ratekeeper.stores.dynamodb import MIGRATE_TIMEOUT, DynamoDBStore

    try:
        store = DynamoDBStore.from_url(url, timeout=MIGRATE_TIMEOUT)
        try:
            done = store.create_table()
        finally:
            store.close()
    except (ConfigError, StoreUnavailable) as exc:
        print(f"ratekeeper migrate: {exc}", file=sys.stderr)
        return 1
    print("\n".join(done) if done else f"table {store.table} already current")
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


TOKEN_ENV = "RATEKEEPER_ADMIN_TOKEN"
EXIT_ERROR = 1  # a configuration, token or store problem (the message says which)
EXIT_USAGE = 2  # bad arguments (argparse's own exit code)


def _add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``serve``, ``inspect`` and ``reset``."""
    serve = sub.add_parser(
        "serve",
        allow_abbrev=False,  # --token must not mean --token-file
        help="serve the admin API, the dashboard and the decision service (uvicorn)",
        description="Serve the admin API, the live dashboard (at /) and the decision service "
        "(POST /v1/check) for the limiters of a configuration file. The token comes from "
        f"${TOKEN_ENV} or --token-file, never from the command line. Exit codes: 0 after a "
        "clean shutdown, 1 for a configuration or token problem, 2 for bad arguments.",
    )
    serve.add_argument("--config", help="TOML/YAML file (default: the one zero config finds)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    serve.add_argument(
        "--token-file", help=f"a file holding the admin token (else ${TOKEN_ENV} is used)"
    )
    serve.add_argument("--log-level", default="info", help="uvicorn's log level (info)")
    for command, text in (
        ("inspect", "show a key's state as peek sees it (consumes nothing)"),
        ("reset", "reset a key: its next request starts from a full limit"),
    ):
        parser = sub.add_parser(
            command,
            help=text,
            description=f"{text[0].upper()}{text[1:]}, for limiter NAME of a configuration "
            "file (rules stored through the admin API applied first). Exit codes: 0 done, "
            "1 unknown limiter, bad file or store unavailable, 2 bad arguments.",
        )
        parser.add_argument("name", help="the limiter's name")
        parser.add_argument("key", help="the key, e.g. user:42")
        parser.add_argument("--config", help="TOML/YAML file (default: the one zero config finds)")
        if command == "inspect":
            parser.add_argument("--cost", type=float, default=1.0, help="the cost asked about (1)")


def _fail(command: str, message: object) -> int:
    print(f"ratekeeper {command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def _read_token(token_file: str | None) -> str:
    """The admin token: from ``token_file`` if given, else from $RATEKEEPER_ADMIN_TOKEN."""
    import os

    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file: {exc}") from None
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ValueError(
            f"no admin token: set ${TOKEN_ENV} or pass --token-file FILE (e.g. "
            f'python -c "import secrets; print(secrets.token_urlsafe())" > FILE)'
        )
    return token


def _serve(config: str | None, host: str, port: int, token_file: str | None, level: str) -> int:
    """``ratekeeper serve``: load the file, build the admin app, run uvicorn until stopped."""
    from ratekeeper.errors import ConfigError
    from ratekeeper.registry import Registry

    try:
        token = _read_token(token_file)
        import uvicorn

        from ratekeeper.admin import create_admin_app

        registry = Registry(discover=False)
        found = registry.load_config(config)
        app = create_admin_app(registry, token=token)
    except ImportError as exc:
        return _fail("serve", f"{exc.name} is missing: pip install 'ratekeeper[admin]'")
    except (ConfigError, ValueError) as exc:
        return _fail("serve", exc)
    limiters = ", ".join(registry.list_limiters()) or "none yet"
    print(f"ratekeeper serve: {found or 'no file'}; limiters: {limiters}", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level=level, lifespan="on")
    finally:
        app.close()
    return 0


def _key_command(command: str, name: str, key: str, config: str | None, cost: float) -> int:
    """``ratekeeper inspect NAME KEY`` / ``reset NAME KEY``."""
    from ratekeeper.errors import ConfigError, StoreUnavailable
    from ratekeeper.registry import Registry

    registry = Registry(discover=False)
    rules = None
    try:
        registry.load_config(config)
        from ratekeeper.admin.rules import RuleSync

        rules = RuleSync(registry)
        rules.load()
        limiter = registry.get_limiter(name)
        if registry.list_limiters()[name]["store"] == "memory":
            print(
                f"ratekeeper {command}: note: limiter {name!r} uses the in-process memory store; "
                "this command sees only its own (empty) state",
                file=sys.stderr,
            )
        if command == "reset":
            limiter.reset(key)
            print(f"reset {name} {key}")
            return 0
        decision = limiter.peek(key, cost)
    except (ConfigError, StoreUnavailable, ValueError) as exc:
        return _fail(command, exc)
    finally:
        if rules is not None:
            rules.close()
        registry.close()
    retry = "never" if decision.retry_after == float("inf") else f"{decision.retry_after:.3f}s"
    print(f"limiter:     {name}")
    print(f"key:         {key}")
    print(f"next hit:    {'allowed' if decision.allowed else 'denied'} (cost {cost:g})")
    print(f"remaining:   {decision.remaining} of {decision.limit} ({decision.policy})")
    print(f"reset_after: {decision.reset_after:.3f}s")
    print(f"retry_after: {retry}")
    return 0
