"""PostgreSQL-specific behaviour: SQL against the Python reference, contention across processes,
a server restart mid-run, bad credentials and hosts, migrations, cleanup. The behaviour every
store shares is in test_conformance.py."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from ratekeeper import AsyncRateLimiter, Limit, RateLimiter, StoreUnavailable
from ratekeeper.algorithms import ALGORITHMS, evaluate
from ratekeeper.errors import ConfigError
from ratekeeper.stores import async_store_from_url, store_from_url
from ratekeeper.stores.base import Rule
from ratekeeper.stores.postgres import AsyncPostgresStore, PostgresStore
from ratekeeper.stores.postgres._core import db_key
from ratekeeper.testing import FakeClock

from .backends.postgres import SCHEMA, postgres_url

pytestmark = pytest.mark.postgres


def prefix() -> str:
    return f"p{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def url() -> str:
    return postgres_url()


@pytest.fixture
def options() -> dict[str, Any]:
    return {"schema": SCHEMA, "table_prefix": prefix()}


@pytest.fixture
def store(url: str, options: dict[str, Any]) -> Iterator[PostgresStore]:
    s = PostgresStore.from_url(url, **options)
    yield s
    s.close()


def count_rows(url: str, options: dict[str, Any]) -> int:
    table = sql.Identifier(options["schema"], options["table_prefix"] + "state")
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- URLs and options


def test_urls_and_options(url: str, options: dict[str, Any]) -> None:
    for scheme in ("postgresql", "postgres"):
        u = urlunsplit(urlsplit(url)._replace(scheme=scheme))
        s = store_from_url(u, **options)
        assert isinstance(s, PostgresStore)
        s.ping()
        s.close()
    query = f"?schema={SCHEMA}&table_prefix={options['table_prefix']}&time_source=client"
    s = PostgresStore.from_url(url + query)
    assert s.options.time_source == "client" and s.options.table_prefix == options["table_prefix"]
    s.close()
    with pytest.raises(ConfigError):
        PostgresStore.from_url(url, time_source="sundial")
    with pytest.raises(ConfigError):
        PostgresStore.from_url(url, table_prefix="x$y")
    with pytest.raises(ConfigError):
        PostgresStore.from_url(url, no_such_option=1)


def test_odd_schema_and_prefix_are_quoted(url: str) -> None:
    odd = {"schema": f'rk "odd"; DROP {uuid.uuid4().hex[:6]}', "table_prefix": "Ta-ble.é "}
    s = PostgresStore.from_url(url, **odd)
    limiter = RateLimiter("2/minute", store=s)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    assert count_rows(url, odd) == 1
    s.close()


def test_db_key() -> None:
    assert db_key("user:42") == "user:42"
    long = db_key("x" * 5000)
    assert long.startswith("sha256:") and len(long) == 71
    assert db_key("a\x00b").startswith("sha256:")
    # a plain key that looks like a hashed one is hashed too: the two never collide
    assert db_key(long) != long


@pytest.mark.parametrize("algorithm", ["gcra", "leaky_bucket"])
def test_sql_reads_a_gcra_state_of_older_versions(url: str, options: dict[str, Any], algorithm):
    """Older versions kept the TAT as one float; the TAT is now an exact pair (high, low) and a
    one-element state reads as (tat, 0), in SQL as in Python."""
    store = PostgresStore.from_url(url, time_source="client", **options)
    rule = Rule(algorithm, (Limit(10, per=1),))
    now = 1_700_000_000.123456
    store.hit("k", rule, 3, now)
    table = sql.Identifier(options["schema"], options["table_prefix"] + "state")
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("UPDATE {} SET state = ARRAY[state[1]]").format(table))
        (old,) = conn.execute(sql.SQL("SELECT state FROM {}").format(table)).fetchone()
    assert len(old) == 1
    state: Any = old[0]  # the reference reads it as a bare float, as older versions wrote it
    for cost in (2, 0, 6, 5):
        now += 0.01
        news, want = evaluate(ALGORITHMS[algorithm], rule.limits, [state], now, cost)
        got = store.hit("k", rule, cost, now)
        assert (got.allowed, got.remaining) == (want.allowed, want.remaining), cost
        assert got.retry_after == pytest.approx(want.retry_after, abs=1e-9)
        if news is not None:
            state = news[0]
    store.close()


def test_cost_above_capacity_is_never_allowed(store: PostgresStore) -> None:
    limiter = RateLimiter("5/second", store=store)
    d = limiter.hit("k", 6)
    assert not d.allowed and d.retry_after == float("inf")


# --------------------------------------------------------------------------- server time


def test_server_clock_ignores_the_callers_clock(store: PostgresStore) -> None:
    clock = FakeClock(0.0)  # far in the past: the server's clock decides
    limiter = RateLimiter("2/hour", store=store, clock=clock)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    clock.advance(7200)  # the caller's clock moves, the server's does not
    assert not limiter.hit("k").allowed


def test_leases_on_server_time(store: PostgresStore) -> None:
    assert store.acquire_lease("k", "a", 1, 30, 0.0) == 0
    wait = store.acquire_lease("k", "b", 1, 30, 0.0)
    assert 29 < wait <= 30
    store.release_lease("k", "a", 0.0)
    assert store.acquire_lease("k", "b", 1, 30, 0.0) == 0


async def test_async_store(url: str, options: dict[str, Any]) -> None:
    store = async_store_from_url(url, **options)
    assert isinstance(store, AsyncPostgresStore)
    limiter = AsyncRateLimiter("2/minute;3/hour", store=store, max_concurrent=1)
    async with limiter.acquire("k"):
        assert await store.acquire_lease("k", "probe", 1, 5, 0.0) > 0
    assert [(await limiter.hit("k")).allowed for _ in range(2)] == [True, False]
    await store.ping()
    await limiter.reset("k")
    assert (await limiter.hit("k")).allowed
    await store.close()


# --------------------------------------------------------------------------- contention


def contention_worker(
    url: str,
    options: dict[str, Any],
    rate: str,
    algorithm: str,
    key: str,
    threads: int,
    hits: int,
    ready: Any,
    start: Any,
    out: Any,
) -> None:
    """One process of the contention test: ``threads`` threads hitting one key."""
    store = store_from_url(url, **options)
    limiter = RateLimiter(rate, algorithm=algorithm, store=store)
    limiter.peek(key)  # connect and set up before the start signal
    counts: list[int] = []
    errors: list[str] = []

    def run() -> None:
        try:
            counts.append(sum(limiter.hit(key).allowed for _ in range(hits)))
        except Exception as exc:  # reported to the test, which fails
            errors.append(repr(exc))

    ready.put(os.getpid())
    start.wait(60)
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((sum(counts), errors))
    store.close()


def collect(results: Any, procs: list[Any], timeout: float = 60) -> list[Any]:
    """One result per process; fail at once when a process died."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < len(procs):
        try:
            got.append(results.get(timeout=0.2))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not dead, f"a worker process failed (exit codes {dead})"
            assert time.monotonic() < deadline, "workers did not answer in time"
    return got


def run_contention(
    url: str, options: dict[str, Any], rate: str, algorithm: str, hits: int
) -> tuple[int, float]:
    """8 processes x 4 threads on one key; returns (admitted, seconds from the start)."""
    ctx = multiprocessing.get_context("spawn")
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    key = f"hot:{uuid.uuid4().hex}"
    procs = [
        ctx.Process(
            target=contention_worker,
            args=(url, options, rate, algorithm, key, 4, hits, ready, start, out),
        )
        for _ in range(8)
    ]
    for p in procs:
        p.start()
    try:
        collect(ready, procs)
        t0 = time.monotonic()
        start.set()
        results = collect(out, procs)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = [error for _, errs in results for error in errs]
    assert not errors, f"workers failed: {errors[:3]}"
    return sum(count for count, _ in results), elapsed


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_log"])
def test_processes_and_threads_admit_exactly_the_limit(url, options, algorithm) -> None:
    PostgresStore.from_url(url, **options).migrate()
    # an exactness test, not a latency one: a generous deadline, so a busy machine cannot fail it
    patient = {**options, "statement_timeout": 5.0, "pool_timeout": 10.0}
    admitted, elapsed = run_contention(url, patient, "100/day;150/7d", algorithm, hits=10)
    assert admitted == 100
    assert elapsed < 10


# --------------------------------------------------------------------------- failures


def pg_ctl(*args: str) -> None:
    bin_dir = os.environ["RATEKEEPER_PG_BIN"]
    data = os.environ["RATEKEEPER_PG_DATA"]
    user = os.environ.get("RATEKEEPER_PG_OSUSER", "postgres")
    # -l: the restarted server must not inherit our pipes (we would wait for their end forever)
    cmd = [f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{data}/restart.log", *args]
    if os.geteuid() == 0 and user != "root":
        cmd = ["runuser", "-u", user, "--", *cmd]
    subprocess.run(
        cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/", timeout=60
    )


def test_restart_mid_run_falls_back_then_recovers(url: str, options: dict[str, Any]) -> None:
    store = PostgresStore.from_url(url, **options)
    allow = RateLimiter("5/day", store=store, on_store_error="allow")
    deny = RateLimiter("1000/day", store=store, on_store_error="deny")
    key = uuid.uuid4().hex
    assert all(allow.hit(key).allowed for _ in range(3))

    restart = threading.Thread(target=pg_ctl, args=("restart", "-m", "fast", "-w"))
    seen: list[tuple[bool, bool, float]] = []
    restart.start()
    while restart.is_alive() or len(seen) < 5:
        for limiter in (allow, deny):
            t0 = time.monotonic()
            d = limiter.hit("probe")  # never raises: on_store_error decides
            seen.append((d.allowed, d.fallback, time.monotonic() - t0))
        if len(seen) > 20_000:
            break
    restart.join()
    fallbacks = [
        (allowed, policy)
        for (allowed, fb, _), policy in zip(seen, "ad" * len(seen), strict=False)
        if fb
    ]
    assert fallbacks, "the restart went unnoticed"
    assert all(allowed == (policy == "a") for allowed, policy in fallbacks)
    assert max(took for *_, took in seen) < 1.5

    deadline = time.monotonic() + 15
    while allow.hit("probe2").fallback:  # recovers without rebuilding anything
        assert time.monotonic() < deadline, "no recovery after the restart"
        time.sleep(0.05)
    # the state survived: 3 of 5 were used before the restart
    decisions = [allow.hit(key) for _ in range(3)]
    assert [(d.allowed, d.fallback) for d in decisions] == [(True, False)] * 2 + [(False, False)]
    store.close()


async def test_async_restart_mid_run_recovers(url: str, options: dict[str, Any]) -> None:
    store = AsyncPostgresStore.from_url(url, **options)
    limiter = AsyncRateLimiter("3/day", store=store, on_store_error="deny")
    assert (await limiter.hit("k")).allowed
    await asyncio.to_thread(pg_ctl, "restart", "-m", "fast", "-w")
    t0 = time.monotonic()
    d = await limiter.hit("k")  # the pooled connection died with the server
    assert time.monotonic() - t0 < 1.5
    deadline = time.monotonic() + 15
    while d.fallback:
        assert not d.allowed
        assert time.monotonic() < deadline, "no recovery after the restart"
        await asyncio.sleep(0.05)
        d = await limiter.hit("k")
    assert d.allowed and d.remaining == 1 and not d.fallback
    await store.close()


def test_unreachable_host_is_unavailable_fast(options: dict[str, Any]) -> None:
    port = free_port()  # nothing listens there
    store = PostgresStore.from_url(f"postgresql://u:p@127.0.0.1:{port}/db", **options)
    limiter = RateLimiter("5/second", store=store)
    for call in (store.ping, lambda: limiter.hit("k")):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"postgresql unavailable.*refused"):
            call()
        assert time.monotonic() - t0 < 3
    fallback = RateLimiter("5/second", store=store, on_store_error="deny").hit("k")
    assert fallback.fallback and not fallback.allowed
    store.close()


@pytest.fixture
def password_role(url: str) -> Iterator[str]:
    """A role that must give its password (the test cluster trusts everyone else)."""
    role = "rk_pw_test"
    hba = Path(os.environ["RATEKEEPER_PG_DATA"]) / "pg_hba.conf"
    line = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
    text = hba.read_text()
    if line not in text:
        hba.write_text(line + text)
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'right'").format(sql.Identifier(role))
            )
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.2)
    yield role


def test_wrong_password_is_a_clear_error(url: str, options, password_role: str) -> None:
    parts = urlsplit(url)
    bad = urlunsplit(parts._replace(netloc=f"{password_role}:wrong@{parts.hostname}:{parts.port}"))
    store = PostgresStore.from_url(bad, **options)
    limiter = RateLimiter("5/second", store=store)
    for call in (store.ping, lambda: limiter.hit("k")):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="password authentication failed"):
            call()
        assert time.monotonic() - t0 < 3
    store.close()


async def test_async_unreachable_host_is_unavailable_fast(options: dict[str, Any]) -> None:
    port = free_port()
    store = AsyncPostgresStore.from_url(f"postgresql://u:p@127.0.0.1:{port}/db", **options)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="refused"):
        await store.ping()
    assert time.monotonic() - t0 < 3
    limiter = AsyncRateLimiter("1/second", store=store, on_store_error="allow")
    d = await limiter.hit("k")
    assert d.allowed and d.fallback
    await store.close()


# --------------------------------------------------------------------------- migrations, cleanup


def test_migration_is_idempotent_and_concurrent(url: str, options: dict[str, Any]) -> None:
    stores = [PostgresStore.from_url(url, auto_migrate=False, **options) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    results: queue.Queue[Any] = queue.Queue()

    def migrate(s: PostgresStore) -> None:
        barrier.wait()
        try:
            results.put(s.migrate())
        except Exception as exc:  # pragma: no cover - reported below
            results.put(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = [results.get() for _ in stores]
    assert sorted(map(repr, outcomes)) == ["False"] * 7 + ["True"]
    limiter = RateLimiter("2/minute", store=stores[0])
    assert limiter.hit("k").allowed
    assert stores[1].migrate() is False
    assert stores[2].migrate(force=True) is True  # re-applying keeps the data
    assert limiter.hit("k").allowed and not limiter.hit("k").allowed
    # an older recorded version is upgraded (the schema is re-applied), data kept
    meta = sql.Identifier(options["schema"], options["table_prefix"] + "meta")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {} SET version = 1").format(meta))
    assert stores[3].migrate() is True
    assert stores[4].migrate() is False
    assert not limiter.hit("k").allowed
    for s in stores:
        s.close()


def test_schema_dropped_behind_our_back_is_set_up_again(url: str, options) -> None:
    store = PostgresStore.from_url(url, **options)
    limiter = RateLimiter("2/minute", store=store)
    assert limiter.hit("k").allowed
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("hit", "state"):
            kind = "FUNCTION" if name == "hit" else "TABLE"
            ident = sql.Identifier(options["schema"], options["table_prefix"] + name)
            conn.execute(sql.SQL(f"DROP {kind} {{}} CASCADE").format(ident))
        meta = sql.Identifier(options["schema"], options["table_prefix"] + "meta")
        conn.execute(sql.SQL("DELETE FROM {}").format(meta))
    assert limiter.hit("k").allowed
    store.close()


def test_cleanup_removes_expired_rows(url: str, options: dict[str, Any]) -> None:
    store = PostgresStore.from_url(
        url, time_source="client", client_grace=0.0, cleanup_interval=None, **options
    )
    clock = FakeClock(1000.0)
    short = RateLimiter(Limit(1, per=0.2), store=store, clock=clock)
    long = RateLimiter("1/hour", store=store, clock=clock)
    for i in range(5):
        assert short.hit(f"s{i}").allowed
    assert long.hit("keep").allowed
    assert count_rows(url, options) == 6
    time.sleep(0.3)
    assert store.cleanup() == 5
    assert count_rows(url, options) == 1
    assert not long.hit("keep").allowed
    store.close()


def test_opportunistic_cleanup(url: str, options: dict[str, Any]) -> None:
    store = PostgresStore.from_url(
        url, time_source="client", client_grace=0.0, cleanup_interval=0.1, **options
    )
    clock = FakeClock(1000.0)
    limiter = RateLimiter(Limit(1, per=0.1), store=store, clock=clock)
    for i in range(20):
        limiter.hit(f"k{i}")
    time.sleep(0.3)
    limiter.hit("last")  # this request also deletes the expired rows
    assert count_rows(url, options) == 1
    store.close()


def test_user_supplied_pool(url: str, options: dict[str, Any]) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(url, min_size=1, max_size=2, open=True) as pool:
        store = PostgresStore(pool=pool, **options)
        limiter = RateLimiter("1/minute", store=store)
        assert limiter.hit("k").allowed and not limiter.hit("k").allowed
        store.close()  # the pool belongs to the caller: still open
        with pool.connection() as conn:
            conn.execute("SELECT 1")


def test_cli_migrate(url: str, options: dict[str, Any], capsys) -> None:
    from ratekeeper.cli import main

    argv = [
        "migrate",
        url,
        "--schema",
        options["schema"],
        "--table-prefix",
        options["table_prefix"],
    ]
    assert main(argv) == 0
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["schema applied", "schema already current"]
    store = PostgresStore.from_url(url, auto_migrate=False, **options)
    assert RateLimiter("1/minute", store=store).hit("k").allowed
    store.close()
    assert main(["migrate", f"postgresql://u:p@127.0.0.1:{free_port()}/db"]) == 1
    assert "postgresql unavailable" in capsys.readouterr().err


def test_the_algorithms_come_from_the_sql_port() -> None:
    """What the store says it runs is what its SQL dispatches on, not a copy of a Python list."""
    from ratekeeper.algorithms import ALGORITHMS
    from ratekeeper.stores.postgres._core import PostgresCore, schema_text, sql_algorithms

    assert PostgresCore.algorithms == sql_algorithms(schema_text()) == set(ALGORITHMS)
    without_gcra = schema_text().replace("ELSIF algo = 'gcra' THEN", "ELSIF false THEN")
    assert "gcra" not in sql_algorithms(without_gcra)
