"""The PostgreSQL store class: one source for the asyncio driver and the blocking one.

``_async_store.py`` is written by hand; ``_sync_store.py`` is generated from it by
``scripts/unasync.py`` (its docstring has the rules), and ``scripts/test`` fails while the two
differ. What is not I/O is in `_core`; the deadline watchdog and the options parser in `_io`.
"""

from __future__ import annotations

import asyncio

# sync: import threading
import time
from collections.abc import Sequence
from typing import Any, Self

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ratekeeper._drive import drive_async
from ratekeeper.algorithms.checks import Check
from ratekeeper.decision import Decision
from ratekeeper.errors import StoreUnavailable
from ratekeeper.stores.base import Applied, Rule
from ratekeeper.stores.postgres._core import (
    Migration,
    PostgresCore,
    Statement,
    is_unavailable,
    split_url,
)
from ratekeeper.stores.postgres._io import CHECK_FAILED, deadline, store_options

__all__ = ["AsyncPostgresStore"]


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
            core.progress()
            return conn

    return AsyncConnection


class AsyncPostgresStore(PostgresCore):
    """PostgreSQL store on a psycopg connection pool: its own (opened at first use, for asyncio
    inside the running event loop), or the one given as ``pool=``."""

    def __init__(
        self,
        conninfo: str = "",
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(store_options(options))
        self._conninfo = self.conninfo(conninfo)
        self._owns_pool = pool is None
        self._pool = pool
        self._opened = pool is not None
        self._open_lock = asyncio.Lock()  # sync: self._open_lock = threading.Lock()
        self._setup_lock = asyncio.Lock()  # sync: self._setup_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncPostgresStore:
        """A store for a ``postgresql://`` (or ``postgres://``) URL with any libpq parameter and
        ratekeeper's own ``schema``, ``table_prefix`` and ``time_source``; keyword ``options``
        win over the URL's."""
        conninfo, options = split_url(url, options)
        return cls(conninfo, **options)

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
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                pool = await self._get_pool()
                if not self.ready:
                    await self._set_up(pool, started)
                conn = await self._getconn(pool, started)
                try:
                    with deadline(self, conn, self.round_trip_timeout(started)):
                        cur = await conn.execute(query, params or None)
                        row = await cur.fetchone() if cur.description else None
                        if not conn.autocommit:  # a pool given by the caller
                            await conn.commit()
                finally:
                    await pool.putconn(conn)
                self.healthy()
                return row[0] if row else None
            except Exception as exc:
                if not self.retry(exc, attempt, started):
                    raise
                attempt += 1

    async def _getconn(
        self, pool: AsyncConnectionPool[Any], started: float
    ) -> psycopg.AsyncConnection[Any]:
        """A pooled connection, waiting as `PostgresCore.waits` says; checked first for a few
        seconds after a failure, within the call's budget (the pool's own check loop could run
        several checks and back off for a second)."""
        conn: psycopg.AsyncConnection[Any]
        for wait in self.waits(started):
            try:
                conn = await pool.getconn(wait)
            except PoolTimeout:
                continue
            if not self.must_check():
                return conn
            try:
                with deadline(self, conn, self.round_trip_timeout(started)):
                    await AsyncConnectionPool.check_connection(conn)
            except CHECK_FAILED:
                await pool.putconn(conn)  # dead or cut: the pool replaces it
                continue
            return conn
        raise self.no_connection(started)

    async def _set_up(self, pool: AsyncConnectionPool[Any], started: float) -> None:
        """Migrate once per store; the other callers wait for it (as for a connection)."""
        for wait in self.waits(started):
            if not await self._lock_setup(wait):
                continue
            try:
                if not self.ready:
                    await self._migrate(pool, False, started)
            finally:
                self._setup_lock.release()
            return
        raise self.setup_timeout(started)

    async def _lock_setup(self, wait: float) -> bool:
        """Take the set-up lock within ``wait`` seconds."""
        try:  # async-only
            async with asyncio.timeout(wait):  # async-only
                await self._setup_lock.acquire()  # async-only
        except TimeoutError:  # async-only
            return False  # async-only
        return True  # sync: return self._setup_lock.acquire(timeout=wait)

    async def _migrate(self, pool: AsyncConnectionPool[Any], force: bool, started: float) -> bool:
        conn = await self._getconn(pool, started)

        async def run(step: Statement) -> Any:
            query, params, fetch, timeout = step
            with deadline(self, conn, self.round_trip_timeout(started, timeout)):
                cur = await conn.execute(query, params or None)
                result = await cur.fetchall() if fetch else None
            self.progress()
            return result

        try:
            async with conn.transaction():
                flow: Migration = self.migration(force)
                changed = bool(await drive_async(flow, run))
        finally:
            await pool.putconn(conn)
        self.ready = True
        return changed

    async def migrate(self, force: bool = False) -> bool:
        """Create or upgrade the schema (idempotent; safe from many processes at once).

        Returns True when this call applied the schema, False when it was already current.
        """
        try:
            return await self._migrate(await self._get_pool(), force, time.monotonic())
        except Exception as exc:
            if is_unavailable(exc) and not isinstance(exc, StoreUnavailable):
                raise self.unavailable(exc) from exc
            raise

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        args = self.hit_args(key, rule, cost, now, True)
        return self.parse_hit(rule, await self._run(self.q_hit, args))

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        args = self.hit_args(key, rule, cost, now, False)
        return self.parse_hit(rule, await self._run(self.q_hit, args))

    async def apply_checks(
        self, checks: Sequence[Check], now: float, write: bool = True
    ) -> Applied:
        """Several checks, all-or-nothing, in one function call (``f_checks``)."""
        args = self.checks_args(checks, now, write)
        return self.parse_checks(checks, await self._run(self.q_checks, args))

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
