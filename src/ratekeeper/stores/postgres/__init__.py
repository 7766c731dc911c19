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

Deadlines: every round trip (and the connection check after a failure) has a client-side
deadline, ``statement_timeout`` (0.5 s), also set server-side; a caller waits for a pooled
connection as long at most, unless the server is visibly answering (then it queues, up to
``pool_timeout``: a busy pool on a healthy server is not an outage). At the deadline a watchdog
thread shuts the connection's socket down, so the waiting driver, sync or asyncio, raises at once
whatever the server does (dead, frozen, blackholed, slow) and the connection is discarded, never
reused. So under any fault every decision ends, with :class:`~ratekeeper.StoreUnavailable` (then
``on_store_error``), within about ``2 * statement_timeout``; while the server stays down, within
``down_timeout`` (0.1 s). Server errors meaning "cannot answer now" (read-only after a failover,
shutdown, too many clients, ...) are `StoreUnavailable` too; broken pooled connections are
replaced by the pool.

Everything that is not I/O lives in :mod:`ratekeeper.stores.postgres._core`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.base import Rule
from ratekeeper.stores.postgres._core import (
    Migration,
    Options,
    PostgresCore,
    is_unavailable,
    split_url,
)

__all__ = ["AsyncPostgresStore", "PostgresStore"]

# The watchdog looks at its deadlines at most this often while busy: a connection is cut at most
# this late, and a busy process wakes the watchdog thread at most 1/_TICK times a second.
_TICK = 0.01
# At a deadline, an answer that has arrived but is not read yet (a busy process) is not a fault:
# the watchdog looks again this much later, and cuts only a connection with nothing to read.
_UNREAD_GRACE = 0.05


def _unread(fd: int) -> bool:
    """Whether the socket has something to read (an answer, or its end) that nobody read yet."""
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))


def _sever(fd: int) -> None:
    """Shut a connection's socket down both ways (the descriptor stays open: its owner closes it),
    so that a driver waiting on it reads end-of-file at once."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Timer:
    __slots__ = ("done", "fd", "fired")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = False
        self.fired = False


class _Watchdog:
    """Cuts every connection whose round trip outlives its deadline.

    One daemon thread per process serves threads and event loops alike. A query cancel would
    need a new connection to the same (perhaps frozen) server; shutting the socket down works
    whatever the server does. A connection with an answer waiting to be read is left alone (its
    caller is only slow to read it: a busy process, not a fault).
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Timer]] = []
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, conn: psycopg.BaseConnection[Any], timeout: float) -> _Timer:
        timer = _Timer(conn.pgconn.socket)
        deadline = time.monotonic() + timeout
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._count), timer))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, name="ratekeeper-postgres-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is timer:
                self._cond.notify()
        return timer

    def disarm(self, timer: _Timer) -> bool:
        """Stop watching (idempotent); True when the deadline came first (the connection was
        cut)."""
        with self._cond:
            timer.done = True
            return timer.fired

    def _watch(self) -> None:
        heap = self._heap
        with self._cond:
            while True:
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    timer = heapq.heappop(heap)[2]
                    if timer.done:
                        continue
                    if _unread(timer.fd):
                        later = (now + _UNREAD_GRACE, next(self._count), timer)
                        heapq.heappush(heap, later)
                    else:
                        timer.fired = True
                        _sever(timer.fd)
                self._cond.wait(max(heap[0][0] - now, _TICK) if heap else None)


_WATCHDOG = _Watchdog()
# A pooled connection that fails its check: dead (a restart), or cut at the deadline.
_CHECK_FAILED = (psycopg.Error, StoreUnavailable, OSError)


@contextlib.contextmanager
def _deadline(
    core: PostgresCore, conn: psycopg.BaseConnection[Any], timeout: float
) -> Iterator[None]:
    """Bound the round trips made inside the block (sync or async) to ``timeout`` seconds.

    Past it, the connection is cut and the block's driver error becomes `StoreUnavailable`. A
    connection cut at all is closed here, so that its pool discards it.
    """
    timer = _WATCHDOG.arm(conn, timeout)
    try:
        yield
    except psycopg.Error as exc:
        if _WATCHDOG.disarm(timer):
            raise core.timed_out(timeout) from exc
        raise
    finally:
        if _WATCHDOG.disarm(timer):
            conn.pgconn.finish()


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
            core.progress()
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
            core.progress()
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
        self._conninfo = self.conninfo(conninfo)
        self._owns_pool = pool is None
        if pool is None:
            pool = ConnectionPool(
                self._conninfo,
                connection_class=_connection_class(self),
                **self.pool_kwargs(),
            )
        self.pool = pool
        self._opened = not self._owns_pool
        self._lock = threading.Lock()
        self._setup_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        conninfo, options = split_url(url, options)
        return cls(conninfo, **options)

    def _open(self) -> None:
        with self._lock:
            if not self._opened:
                self.pool.open(wait=False)
                self._opened = True

    def _run(self, query: Any, params: Any) -> Any:
        """Send one statement; return the first column of its first row (or None)."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                if not self._opened:
                    self._open()
                if not self.ready:
                    self._set_up(started)
                conn = self._getconn(started)
                try:
                    with _deadline(self, conn, self.round_trip_timeout(started)):
                        cur = conn.execute(query, params or None)
                        row = cur.fetchone() if cur.description else None
                        if not conn.autocommit:  # a pool given by the caller
                            conn.commit()
                finally:
                    self.pool.putconn(conn)
                self.healthy()
                return row[0] if row else None
            except Exception as exc:
                if not self.retry(exc, attempt, started):
                    raise
                attempt += 1

    def _getconn(self, started: float) -> psycopg.Connection[Any]:
        """A pooled connection, waiting as `PostgresCore.waits` says; checked first for a few
        seconds after a failure, within the call's budget (the pool's own check loop could run
        several checks and back off for a second)."""
        conn: psycopg.Connection[Any]
        for wait in self.waits(started):
            try:
                conn = self.pool.getconn(wait)
            except PoolTimeout:
                continue
            if not self.must_check():
                return conn
            try:
                with _deadline(self, conn, self.round_trip_timeout(started)):
                    ConnectionPool.check_connection(conn)
            except _CHECK_FAILED:
                self.pool.putconn(conn)  # dead or cut: the pool replaces it
                continue
            return conn
        raise self.no_connection(started)

    def _set_up(self, started: float) -> None:
        """Migrate once per store; the other callers wait for it (as for a connection)."""
        for wait in self.waits(started):
            if self._setup_lock.acquire(timeout=wait):
                try:
                    if not self.ready:
                        self._migrate(False, started)
                finally:
                    self._setup_lock.release()
                return
        raise self.setup_timeout(started)

    def _migrate(self, force: bool, started: float) -> bool:
        conn = self._getconn(started)
        try:
            with conn.transaction():
                flow: Migration = self.migration(force)
                result: Any = None
                while True:
                    try:
                        query, params, fetch, timeout = flow.send(result)
                    except StopIteration as stop:
                        changed = bool(stop.value)
                        break
                    with _deadline(self, conn, self.round_trip_timeout(started, timeout)):
                        cur = conn.execute(query, params or None)
                        result = cur.fetchall() if fetch else None
                    self.progress()
        finally:
            self.pool.putconn(conn)
        self.ready = True
        return changed

    def migrate(self, force: bool = False) -> bool:
        """Create or upgrade the schema (idempotent; safe from many processes at once).

        Returns True when this call applied the schema, False when it was already current.
        """
        try:
            if not self._opened:
                self._open()
            return self._migrate(force, time.monotonic())
        except Exception as exc:
            if is_unavailable(exc) and not isinstance(exc, StoreUnavailable):
                raise self.unavailable(exc) from exc
            raise

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

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncPostgresStore:
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
                    with _deadline(self, conn, self.round_trip_timeout(started)):
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
        """A pooled connection (see `PostgresStore._getconn`)."""
        conn: psycopg.AsyncConnection[Any]
        for wait in self.waits(started):
            try:
                conn = await pool.getconn(wait)
            except PoolTimeout:
                continue
            if not self.must_check():
                return conn
            try:
                with _deadline(self, conn, self.round_trip_timeout(started)):
                    await AsyncConnectionPool.check_connection(conn)
            except _CHECK_FAILED:
                await pool.putconn(conn)
                continue
            return conn
        raise self.no_connection(started)

    async def _set_up(self, pool: AsyncConnectionPool[Any], started: float) -> None:
        """Migrate once per store; the other tasks wait for it (as for a connection)."""
        for wait in self.waits(started):
            try:
                async with asyncio.timeout(wait):
                    await self._setup_lock.acquire()
            except TimeoutError:
                continue
            try:
                if not self.ready:
                    await self._migrate(pool, False, started)
            finally:
                self._setup_lock.release()
            return
        raise self.setup_timeout(started)

    async def _migrate(self, pool: AsyncConnectionPool[Any], force: bool, started: float) -> bool:
        conn = await self._getconn(pool, started)
        try:
            async with conn.transaction():
                flow: Migration = self.migration(force)
                result: Any = None
                while True:
                    try:
                        query, params, fetch, timeout = flow.send(result)
                    except StopIteration as stop:
                        changed = bool(stop.value)
                        break
                    with _deadline(self, conn, self.round_trip_timeout(started, timeout)):
                        cur = await conn.execute(query, params or None)
                        result = await cur.fetchall() if fetch else None
                    self.progress()
        finally:
            await pool.putconn(conn)
        self.ready = True
        return changed

    async def migrate(self, force: bool = False) -> bool:
        """Create or upgrade the schema (idempotent; safe from many processes at once)."""
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
