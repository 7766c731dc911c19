"""The Redis store: every algorithm as one atomic Lua script, one ``EVALSHA`` round trip per
decision, on standalone Redis, Redis Cluster or Sentinel, sync (`RedisStore`) and asyncio
(`AsyncRedisStore`).

``RedisStore.from_url("redis://127.0.0.1:6379/0")`` (also ``rediss://``, ``unix://``,
``redis+cluster://h:p,h:p``, ``redis+sentinel://h:p/service``) or
``RedisStore(client=redis.Redis(...))``. Time is read inside the script with ``TIME`` unless the
store is built with ``time_source="client"`` (then the limiter's clock reading is used, which is
how tests replay a FakeClock). See the README's "Redis" section for keys, TTLs and failures.

Both classes are thin drivers over :class:`~ratekeeper.stores.redis._core.RedisCore`: they send
the commands it builds and hand the reply back to it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref
from typing import Any, ClassVar, TypeAlias

import redis.exceptions as rex

from ratekeeper.decision import Decision
from ratekeeper.stores.base import Rule
from ratekeeper.stores.redis._core import (
    FAST_RETRY,
    LEASE_ACQUIRE,
    LEASE_RELEASE,
    LIMIT_SCRIPTS,
    UNAVAILABLE,
    NoScriptError,
    RedisCore,
    Script,
    TimeSource,
    parse_decision,
    unavailable,
)

__all__ = ["AsyncRedisStore", "RedisStore"]

_RAW = {"NEVER_DECODE": True}  # replies carry packed doubles: never decode them as text
_SLOW: Any = object()  # "let redis-py's execute_command do it"
_MAX_PIPELINES = 4  # pipelines in flight at once per async store; more callers queue for the next


_Item: TypeAlias = tuple[bytes, str, Rule, float, float, bool, "asyncio.Future[Any]"]


def _script(rule: Rule) -> Script:
    return LIMIT_SCRIPTS[rule.algorithm.name]


def _forget_own(ref: weakref.ref[RedisStore]) -> None:
    store = ref()
    if store is not None:
        store._own = None
        store._own_lock = threading.Lock()


class RedisStore(RedisCore):
    """Synchronous Redis store on redis-py.

    ``RedisStore(client=redis.Redis(...))`` (also a ``redis.cluster.RedisCluster`` or a Sentinel
    ``master_for`` client; the store never closes a client it was given), or
    ``RedisStore.from_url(url, **options)``. ``prefix``: first part of every key (default
    ``"rk"``, no braces). ``time_source``: ``"server"`` (default: Redis ``TIME``) or ``"client"``
    (the ``now`` the limiter passes).
    """

    _aio: ClassVar[bool] = False

    def _run(self, script: Script, args: tuple[Any, ...]) -> Any:
        client = self._client or self._connect()
        try:
            try:
                return client.execute_command("EVALSHA", script.sha, *args, **_RAW)
            except NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL loads it again
                return client.execute_command("EVAL", script.source, *args, **_RAW)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self._limit(key, rule, cost, now, True)

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self._limit(key, rule, cost, now, False)

    def _bind(self, client: Any) -> None:
        super()._bind(client)
        # One connection kept checked out of the pool for whichever thread finds it free: a
        # lone caller (the common case) skips the pool's checkout and health check per request.
        self._own: Any = None
        self._own_lock = threading.Lock()
        if not getattr(self, "_fork_hook", False):  # a forked child never uses the parent's
            self._fork_hook = True
            os.register_at_fork(after_in_child=functools.partial(_forget_own, weakref.ref(self)))

    def _limit(self, key: str, rule: Rule, cost: float, now: float, write: bool) -> Decision:
        pool = self._pool
        if pool is not None:  # fast path: the pre-encoded command, straight on a connection
            prepared, packet = self.limit_packet(key, rule, cost, now, write)
            lock = self._own_lock
            if lock.acquire(False):
                try:
                    reply = self._exchange(self._own or self._take_own(pool), packet)
                finally:
                    lock.release()
            else:
                conn = self._checkout(pool)
                try:
                    reply = self._exchange(conn, packet)
                finally:
                    pool.release(conn)
            if reply is not _SLOW:
                return parse_decision(prepared, reply)
        prepared, args = self.limit_command(key, rule, cost, now, write)
        return parse_decision(prepared, self._run(prepared.script, args))

    def _checkout(self, pool: Any) -> Any:
        try:
            return pool.get_connection(*self._get_args)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    def _take_own(self, pool: Any) -> Any:
        self._own = self._checkout(pool)
        return self._own

    @staticmethod
    def _exchange(conn: Any, packet: bytes) -> Any:
        """Send one command and read its reply; ``_SLOW`` when redis-py's own path (EVAL after
        NOSCRIPT, a fresh connection after a dead one) should take over."""
        try:
            conn.send_packed_command((packet,))
            return conn.read_response(disable_decoding=True)
        except NoScriptError:
            return _SLOW
        except FAST_RETRY:
            conn.disconnect()  # it reconnects on its next use
            return _SLOW
        except BaseException as exc:
            conn.disconnect()
            if isinstance(exc, UNAVAILABLE):
                raise unavailable(exc) from exc
            raise

    def reset(self, key: str, rule: Rule) -> None:
        client = self._client or self._connect()
        try:
            client.execute_command("DEL", *self.reset_keys(key, rule))
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        return float(self._run(LEASE_ACQUIRE, self.acquire_command(key, lease_id, limit, ttl, now)))

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        self._run(LEASE_RELEASE, self.release_command(key, lease_id, now))

    def ping(self) -> None:
        client = self._client or self._connect()
        try:
            client.ping()
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    def close(self) -> None:
        own, pool = self._own, self._pool
        if own is not None and pool is not None:
            self._own = None
            pool.release(own)
        client = self._detach()
        if client is not None:
            for each in (client, *getattr(client, "_ratekeeper_also_close", ())):
                each.close()
                pool = getattr(each, "connection_pool", None)
                if pool is not None:
                    pool.disconnect()


class AsyncRedisStore(RedisCore):
    """The asyncio twin of :class:`RedisStore` on ``redis.asyncio`` (same arguments; ``client``
    is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``).

    With ``pipelining=True`` (the default; not on Cluster) the scripts that concurrent tasks
    call in one event-loop iteration go to Redis together, as one pipeline: each decision is
    still one atomic ``EVALSHA``, but many share a round trip and a connection.
    """

    _aio: ClassVar[bool] = True

    def _setup(self, prefix: str, time_source: TimeSource, pipelining: bool) -> None:
        super()._setup(prefix, time_source, pipelining)
        self._pending: list[_Item] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._in_flight = 0
        self._flushes: set[asyncio.Task[None]] = set()

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self._limit(key, rule, cost, now, True)

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self._limit(key, rule, cost, now, False)

    async def _limit(self, key: str, rule: Rule, cost: float, now: float, write: bool) -> Decision:
        pool = self._pool
        if pool is None:  # Cluster (or not connected yet): redis-py's own path
            prepared, args = self.limit_command(key, rule, cost, now, write)
            return parse_decision(prepared, await self._run(prepared.script, args))
        prepared, packet = self.limit_packet(key, rule, cost, now, write)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        item = (packet, key, rule, cost, now, write, future)
        if not self._pipelining:
            await self._flush(pool, [item])
            return parse_decision(prepared, await future)
        if loop is not self._loop:  # first use, or a new event loop: nothing queued carries over
            self._loop, self._pending, self._scheduled, self._in_flight = loop, [], False, 0
        self._pending.append(item)
        if not self._scheduled and self._in_flight < _MAX_PIPELINES:
            self._scheduled = True
            loop.call_soon(self._launch, pool)
        return parse_decision(prepared, await future)

    def _launch(self, pool: Any) -> None:
        """Send what the tasks queued during this loop iteration, as one pipeline."""
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._flush(pool, batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, pool: Any, batch: list[_Item]) -> None:
        """Send a batch of pre-encoded commands on one connection and resolve their futures.
        Each command is its own atomic script call; a NOSCRIPT reply goes through the slow path
        (EVALSHA, then EVAL)."""
        self._in_flight += 1
        try:
            results: list[Any] = []
            try:
                conn = await pool.get_connection(*self._get_args)
            except UNAVAILABLE as exc:
                results = [unavailable(exc)] * len(batch)
            else:
                try:
                    await conn.send_packed_command((b"".join(item[0] for item in batch),))
                    for _ in batch:
                        try:
                            results.append(await conn.read_response(disable_decoding=True))
                        except rex.ResponseError as exc:
                            results.append(exc)
                except BaseException as exc:
                    await conn.disconnect()
                    error = unavailable(exc) if isinstance(exc, UNAVAILABLE) else exc
                    results += [error] * (len(batch) - len(results))
                    if not isinstance(exc, Exception):
                        raise
                finally:
                    await pool.release(conn)
            for (_, key, rule, cost, now, write, future), result in zip(
                batch, results, strict=True
            ):
                if isinstance(result, NoScriptError):
                    try:
                        _, args = self.limit_command(key, rule, cost, now, write)
                        result = await self._run(_script(rule), args)
                    except Exception as exc:
                        result = exc
                elif isinstance(result, UNAVAILABLE):
                    result = unavailable(result)
                if future.done():  # the task awaiting it was cancelled
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            for item in batch:  # never leave a waiter hanging
                if not item[-1].done():
                    item[-1].cancel()
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._launch, pool)

    async def _run(self, script: Script, args: tuple[Any, ...]) -> Any:
        client = self._client or self._connect()
        try:
            try:
                return await client.execute_command("EVALSHA", script.sha, *args, **_RAW)
            except NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL loads it again
                return await client.execute_command("EVAL", script.source, *args, **_RAW)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def reset(self, key: str, rule: Rule) -> None:
        client = self._client or self._connect()
        try:
            await client.execute_command("DEL", *self.reset_keys(key, rule))
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        args = self.acquire_command(key, lease_id, limit, ttl, now)
        return float(await self._run(LEASE_ACQUIRE, args))

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        await self._run(LEASE_RELEASE, self.release_command(key, lease_id, now))

    async def ping(self) -> None:
        client = self._client or self._connect()
        try:
            await client.ping()
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def close(self) -> None:
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        client = self._detach()
        if client is not None:
            for each in (client, *getattr(client, "_ratekeeper_also_close", ())):
                await (getattr(each, "aclose", None) or each.close)()
                pool = getattr(each, "connection_pool", None)
                if pool is not None:
                    await pool.disconnect()
