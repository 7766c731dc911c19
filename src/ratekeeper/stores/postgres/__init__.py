"""PostgreSQL stores (``postgresql://`` and ``postgres://``), sync and asyncio, on psycopg 3.

One round trip per decision: each algorithm is a plpgsql function (a line-by-line port of
:mod:`ratekeeper.algorithms`) and one function call applies a request to every limit of a rule,
all-or-nothing, with the rows locked in (key, part) order so that concurrent callers never
deadlock. Time comes from the server's ``clock_timestamp()``, so app servers with skewed clocks
agree; ``time_source="client"`` uses the limiter's clock instead (how the conformance suite replays
FakeClock traces against the Python reference).

Setup: ``store.migrate()`` (or the first request, unless ``auto_migrate=False``) creates the
schema, the state table and the functions. It is idempotent and versioned, and safe when many app
servers start at once (a transaction-scoped advisory lock serializes the DDL).

Cleanup: every row records when its state is fully replenished (``expires_at``, server time); an
expired row reads as a new key. Expired rows are deleted in batches by :meth:`cleanup` and,
opportunistically, by one request every ``cleanup_interval`` seconds per store object.

A server that is down, refuses the password or cannot be reached raises
:class:`~ratekeeper.StoreUnavailable` within ``pool_timeout`` (0.5 s; then ``down_timeout``,
0.1 s, while it stays down); broken pooled connections are replaced by themselves.

Everything that is not I/O lives in :mod:`ratekeeper.stores.postgres._core`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Self

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.base import Rule
from ratekeeper.stores.postgres._core import (
    MISSING_SCHEMA,
    UNAVAILABLE,
    Migration,
    Options,
    PostgresCore,
    split_url,
)

__all__ = ["AsyncPostgresStore", "PostgresStore"]

_SLICE = 0.05  # seconds: how often a caller waiting for a connection re-checks the server


def _connection_class(core: PostgresCore) -> type[psycopg.Connection[Any]]:
    """A connection class that tells ``core`` how the pool's attempts to connect go."""

    class Connection(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            try:
                conn = super().connect(conninfo, **kwargs)
            except Exception as exc:
                core.connect_error = exc
                raise
            core.connect_error = None
            return conn

    return Connection


def _async_connection_class(core: PostgresCore) -> type[psycopg.AsyncConnection[Any]]:
    class AsyncConnection(psycopg.AsyncConnection[Any]):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            try:
                conn = await super().connect(conninfo, **kwargs)
            except Exception as exc:
                core.connect_error = exc
                raise
            core.connect_error = None
            return conn

    return AsyncConnection


def _options(options: dict[str, Any]) -> Options:
    try:
        return Options(**options)
    except TypeError as exc:
        raise ConfigError(f"unknown PostgreSQL store option: {exc}") from None


class PostgresStore(PostgresCore):
    """Synchronous PostgreSQL store on a psycopg ``ConnectionPool`` (its own, or ``pool=``)."""

    def __init__(
        self, conninfo: str = "", *, pool: ConnectionPool[Any] | None = None, **options: Any
    ) -> None:
        super().__init__(_options(options))
        o = self.options
        self._conninfo = self.conninfo(conninfo)
        self._owns_pool = pool is None
        if pool is None:
            pool = ConnectionPool(
                self._conninfo,
                connection_class=_connection_class(self),
                check=self._check,
                **self.pool_kwargs(),
            )
        self.pool = pool
        self._opened = not self._owns_pool
        self._ready = not o.auto_migrate
        self._lock = threading.Lock()
        self._setup_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        conninfo, options = split_url(url, options)
        return cls(conninfo, **options)

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        if self.must_check():
            ConnectionPool.check_connection(conn)

    def _open(self) -> None:
        with self._lock:
            if not self._opened:
                self.pool.open(wait=False)
                self._opened = True

    def _run(self, query: Any, params: Any) -> Any:
        """Send one statement; return the first column of its first row (or None)."""
        for attempt in (0, 1):
            try:
                if not self._opened:
                    self._open()
                if not self._ready:
                    with self._setup_lock:  # one set-up per store, the others wait for it
                        if not self._ready:
                            self._migrate(False)
                conn = self._getconn()
                try:
                    cur = conn.execute(query, params or None)
                    row = cur.fetchone() if cur.description else None
                    if not conn.autocommit:  # a pool given by the caller
                        conn.commit()
                finally:
                    self.pool.putconn(conn)
                self.healthy()
                return row[0] if row else None
            except StoreUnavailable:
                raise
            except MISSING_SCHEMA:
                if attempt or not self.options.auto_migrate:
                    raise
                self._ready = False  # the schema was dropped: set it up again, retry once
            except UNAVAILABLE as exc:
                raise self.unavailable(exc) from exc
        raise AssertionError("unreachable")

    def _getconn(self) -> psycopg.Connection[Any]:
        """A pooled connection. Until the store has worked, or while it fails, wait in short
        slices so that a server found refusing or down answers at once."""
        conn: psycopg.Connection[Any]
        wait = self.pool_wait()
        if not self.sliced_wait():
            conn = self.pool.getconn(wait)
            return conn
        deadline = time.monotonic() + wait
        while True:
            try:
                conn = self.pool.getconn(min(_SLICE, max(deadline - time.monotonic(), 0.001)))
                return conn
            except PoolTimeout:
                if not self.keep_waiting(deadline):
                    raise

    def _migrate(self, force: bool) -> bool:
        conn = self._getconn()
        try:
            with conn.transaction():
                flow: Migration = self.migration(force)
                result: Any = None
                while True:
                    try:
                        query, params, fetch = flow.send(result)
                    except StopIteration as stop:
                        changed = bool(stop.value)
                        break
                    cur = conn.execute(query, params or None)
                    result = cur.fetchall() if fetch else None
        finally:
            self.pool.putconn(conn)
        self._ready = True
        return changed

    def migrate(self, force: bool = False) -> bool:
        """Create or upgrade the schema (idempotent; safe from many processes at once).

        Returns True when this call applied the schema, False when it was already current.
        """
        try:
            if not self._opened:
                self._open()
            return self._migrate(force)
        except UNAVAILABLE as exc:
            if isinstance(exc, StoreUnavailable):
                raise
            raise self.unavailable(exc) from exc

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self.parse_hit(
            rule, self._run(self.q_hit, self.hit_args(key, rule, cost, now, True))
        )

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self.parse_hit(
            rule, self._run(self.q_hit, self.hit_args(key, rule, cost, now, False))
        )

    def reset(self, key: str, rule: Rule) -> None:
        self._run(self.q_reset, self.reset_args(key, rule))

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        return float(self._run(self.q_acquire, self.acquire_args(key, lease_id, limit, ttl, now)))

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        self._run(self.q_release, self.release_args(key, lease_id, now))

    def cleanup(self) -> int:
        """Delete every expired row now (in batches); returns how many were deleted."""
        total = 0
        while True:
            n = int(self._run(self.q_cleanup, [self.options.cleanup_batch]))
            total += n
            if n < self.options.cleanup_batch:
                return total

    def ping(self) -> None:
        self._run(self.q_ping, ())

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()


class AsyncPostgresStore(PostgresCore):
    """asyncio PostgreSQL store on a psycopg ``AsyncConnectionPool`` (its own, or ``pool=``).

    The pool opens at first use, inside the running event loop.
    """

    def __init__(
        self,
        conninfo: str = "",
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(_options(options))
        self._conninfo = self.conninfo(conninfo)
        self._owns_pool = pool is None
        self._pool = pool
        self._opened = pool is not None
        self._open_lock = asyncio.Lock()
        self._setup_lock = asyncio.Lock()
        self._ready = not self.options.auto_migrate

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncPostgresStore:
        conninfo, options = split_url(url, options)
        return cls(conninfo, **options)

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.must_check():
            await AsyncConnectionPool.check_connection(conn)

    async def _get_pool(self) -> AsyncConnectionPool[Any]:
        pool = self._pool
        if pool is not None and self._opened:
            return pool
        async with self._open_lock:
            return await self._open()

    async def _open(self) -> AsyncConnectionPool[Any]:
        pool = self._pool
        if pool is None:
            pool = AsyncConnectionPool(
                self._conninfo,
                connection_class=_async_connection_class(self),
                check=self._check,
                **self.pool_kwargs(),
            )
            await pool.open(wait=False)
            self._pool = pool
        self._opened = True
        return pool

    @property
    def pool(self) -> AsyncConnectionPool[Any] | None:
        return self._pool

    async def _run(self, query: Any, params: Any) -> Any:
        """Send one statement; return the first column of its first row (or None)."""
        for attempt in (0, 1):
            try:
                pool = await self._get_pool()
                if not self._ready:
                    async with self._setup_lock:  # one set-up per store, the others wait for it
                        if not self._ready:
                            await self._migrate(False)
                conn = await self._getconn(pool)
                try:
                    cur = await conn.execute(query, params or None)
                    row = await cur.fetchone() if cur.description else None
                    if not conn.autocommit:  # a pool given by the caller
                        await conn.commit()
                finally:
                    await pool.putconn(conn)
                self.healthy()
                return row[0] if row else None
            except StoreUnavailable:
                raise
            except MISSING_SCHEMA:
                if attempt or not self.options.auto_migrate:
                    raise
                self._ready = False
            except UNAVAILABLE as exc:
                raise self.unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def _getconn(self, pool: AsyncConnectionPool[Any]) -> psycopg.AsyncConnection[Any]:
        """A pooled connection (see `PostgresStore._getconn`)."""
        conn: psycopg.AsyncConnection[Any]
        wait = self.pool_wait()
        if not self.sliced_wait():
            conn = await pool.getconn(wait)
            return conn
        deadline = time.monotonic() + wait
        while True:
            try:
                conn = await pool.getconn(min(_SLICE, max(deadline - time.monotonic(), 0.001)))
                return conn
            except PoolTimeout:
                if not self.keep_waiting(deadline):
                    raise

    async def _migrate(self, force: bool) -> bool:
        pool = await self._get_pool()
        conn = await self._getconn(pool)
        try:
            async with conn.transaction():
                flow: Migration = self.migration(force)
                result: Any = None
                while True:
                    try:
                        query, params, fetch = flow.send(result)
                    except StopIteration as stop:
                        changed = bool(stop.value)
                        break
                    cur = await conn.execute(query, params or None)
                    result = await cur.fetchall() if fetch else None
        finally:
            await pool.putconn(conn)
        self._ready = True
        return changed

    async def migrate(self, force: bool = False) -> bool:
        """Create or upgrade the schema (idempotent; safe from many processes at once)."""
        try:
            return await self._migrate(force)
        except UNAVAILABLE as exc:
            if isinstance(exc, StoreUnavailable):
                raise
            raise self.unavailable(exc) from exc

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        args = self.hit_args(key, rule, cost, now, True)
        return self.parse_hit(rule, await self._run(self.q_hit, args))

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        args = self.hit_args(key, rule, cost, now, False)
        return self.parse_hit(rule, await self._run(self.q_hit, args))

    async def reset(self, key: str, rule: Rule) -> None:
        await self._run(self.q_reset, self.reset_args(key, rule))

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        args = self.acquire_args(key, lease_id, limit, ttl, now)
        return float(await self._run(self.q_acquire, args))

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        await self._run(self.q_release, self.release_args(key, lease_id, now))

    async def cleanup(self) -> int:
        """Delete every expired row now (in batches); returns how many were deleted."""
        total = 0
        while True:
            n = int(await self._run(self.q_cleanup, [self.options.cleanup_batch]))
            total += n
            if n < self.options.cleanup_batch:
                return total

    async def ping(self) -> None:
        await self._run(self.q_ping, ())

    async def close(self) -> None:
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
