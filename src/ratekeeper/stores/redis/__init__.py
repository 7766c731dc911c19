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
import concurrent.futures
import functools
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, TypeAlias

import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from ratekeeper.decision import Decision
from ratekeeper.stores.base import Rule
from ratekeeper.stores.redis._core import (
    LEASE_ACQUIRE,
    LEASE_RELEASE,
    LIMIT_SCRIPTS,
    UNAVAILABLE,
    NoScriptError,
    RedisCore,
    Script,
    TimeSource,
    failure,
    fast_pool,
    parse_decision,
    timed_out,
)

__all__ = ["AsyncRedisStore", "RedisStore"]

_RAW = {"NEVER_DECODE": True}  # replies carry packed doubles: never decode them as text
_MAX_PIPELINES = 4  # pipelines in flight at once per async store; more callers queue for the next
_SLOW_WORKERS = 32  # threads running the sync Cluster client's calls, so that they can time out
_NO_RETRY = Retry(NoBackoff(), 0)
_clock = time.monotonic  # deadlines: monotonic seconds (asyncio's loop.time() may differ)

Command: TypeAlias = Callable[[], tuple[Any, ...]]  # the arguments, built only when needed
# packet, key, rule, cost, now, write, give-up time, the waiting caller's future
_Item: TypeAlias = tuple[bytes, str, Rule, float, float, bool, float, "asyncio.Future[Any]"]


def _script(rule: Rule) -> Script:
    return LIMIT_SCRIPTS[rule.algorithm.name]


def _connection_broken(exc: BaseException) -> bool:
    """Whether a connection that raised ``exc`` must be dropped: anything but a plain error
    reply (a transient one included: after READONLY or MASTERDOWN the next connection may
    reach the new master)."""
    return not isinstance(exc, rex.ResponseError) or failure(exc) is not exc


def _forget_own(ref: weakref.ref[RedisStore]) -> None:
    store = ref()
    if store is not None:
        store._own = None
        store._own_lock = threading.Lock()
        store._workers = None


class RedisStore(RedisCore):
    """Synchronous Redis store on redis-py.

    ``RedisStore(client=redis.Redis(...))`` (also a ``redis.cluster.RedisCluster`` or a Sentinel
    ``master_for`` client; the store never closes a client it was given), or
    ``RedisStore.from_url(url, **options)``. ``prefix``: first part of every key (default
    ``"rk"``, no braces). ``time_source``: ``"server"`` (default: Redis ``TIME``) or ``"client"``
    (the ``now`` the limiter passes).

    Every call finishes within ``socket_timeout`` (0.5 s) of its start, pool wait, connect,
    send and reply included (plus at most one ``pool_timeout`` when more threads than
    ``max_connections`` wait and the server is unreachable): on the pooled connections the
    socket's timeout is what is left of the budget; the Cluster client's calls run in worker
    threads that the caller stops waiting for.
    """

    _aio: ClassVar[bool] = False

    def _bind(self, client: Any) -> None:
        super()._bind(client)
        # One connection kept checked out of the pool for whichever thread finds it free: a
        # lone caller (the common case) skips the pool's checkout and health check per request.
        self._own: Any = None
        self._own_lock = threading.Lock()
        if not hasattr(self, "_workers"):
            self._workers: concurrent.futures.ThreadPoolExecutor | None = None
        if not getattr(self, "_fork_hook", False):  # a forked child never uses the parent's
            self._fork_hook = True
            os.register_at_fork(after_in_child=functools.partial(_forget_own, weakref.ref(self)))

    # -- decisions

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self._limit(key, rule, cost, now, True)

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self._limit(key, rule, cost, now, False)

    def _limit(self, key: str, rule: Rule, cost: float, now: float, write: bool) -> Decision:
        give_up = _clock() + self.timeout
        deadline = self._deadline(give_up)
        prepared, packet = self.limit_packet(key, rule, cost, now, write, deadline)

        def command() -> tuple[Any, ...]:
            return (
                "EVALSHA",
                prepared.sha,
                *self.limit_command(key, rule, cost, now, write, deadline)[1],
            )

        return parse_decision(prepared, self._request(give_up, command, packet, prepared.script))

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        give_up = _clock() + self.timeout
        args = self.acquire_command(key, lease_id, limit, ttl, now, self._deadline(give_up))
        command = functools.partial(_evalsha, LEASE_ACQUIRE, args)
        return float(self._request(give_up, command, None, LEASE_ACQUIRE))

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        give_up = _clock() + self.timeout
        args = self.release_command(key, lease_id, now, self._deadline(give_up))
        self._request(
            give_up, functools.partial(_evalsha, LEASE_RELEASE, args), None, LEASE_RELEASE
        )

    def reset(self, key: str, rule: Rule) -> None:
        keys = self.reset_keys(key, rule)
        self._request(_clock() + self.timeout, lambda: ("DEL", *keys))

    def ping(self) -> None:
        self._request(_clock() + self.timeout, lambda: ("PING",))

    def _deadline(self, give_up: float) -> bytes:
        """The deadline argument of a script; measures the server's clock when it is due (one
        thread at a time; the others use the previous measurement meanwhile)."""
        clock = self.server_clock
        if clock.stale(_clock()) and clock._lock.acquire(False):
            try:
                sent = _clock()
                reply = self._request(give_up, lambda: ("TIME",))
                clock.record(sent, _clock(), reply)
            finally:
                clock._lock.release()
        return clock.deadline(give_up)

    # -- I/O

    def _request(
        self,
        give_up: float,
        command: Command,
        packet: bytes | None = None,
        script: Script | None = None,
    ) -> Any:
        """Send one command and return its reply, by ``give_up`` (monotonic) or raise
        StoreUnavailable. ``packet``: the command already encoded; ``script``: the script an
        EVALSHA runs (sent again as EVAL after NOSCRIPT)."""
        if self._client is None:
            self._bounded(give_up, self._connect)
        pool = self._pool
        if pool is None:  # Cluster, or a client pinned to one connection: redis-py's own path
            return self._bounded(give_up, self._execute, command, script)
        lock = self._own_lock
        if lock.acquire(False):
            try:
                if self._own is None:
                    self._own = self._checkout(pool)
                return self._exchange(self._own, give_up, command, packet, script)
            finally:
                lock.release()
        conn = self._checkout(pool)
        try:
            return self._exchange(conn, give_up, command, packet, script)
        finally:
            pool.release(conn)

    def _checkout(self, pool: Any) -> Any:
        try:
            return pool.get_connection(*self._get_args)
        except Exception as exc:
            raise failure(exc) from exc

    def _exchange(
        self,
        conn: Any,
        give_up: float,
        command: Command,
        packet: bytes | None,
        script: Script | None,
    ) -> Any:
        """One command on ``conn``, within the budget; after a connection error (a server that
        restarted), once more on a fresh connection if ``retries`` allows and time is left."""
        attempts = 1 + min(conn.retry._retries, 1)
        for attempt in range(attempts):
            try:
                _arm(conn, give_up)
                if packet is None:
                    conn.send_packed_command(conn.pack_command(*command()), check_health=False)
                else:
                    conn.send_packed_command((packet,), check_health=False)
                try:
                    return conn.read_response(disable_decoding=True)
                except NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL loads it again
                    assert script is not None
                    conn.send_packed_command(
                        conn.pack_command("EVAL", script.source, *command()[2:]),
                        check_health=False,
                    )
                    return conn.read_response(disable_decoding=True)
            except BaseException as exc:
                if _connection_broken(exc):
                    conn.disconnect()
                error = failure(exc)
                if str(exc).startswith("DEADLINE"):
                    self.server_clock.forget()  # refused while we still waited: measure again
                if (
                    attempt + 1 < attempts
                    and isinstance(exc, (rex.ConnectionError, ConnectionError))
                    and _clock() < give_up
                ):
                    continue
                if error is exc:
                    raise
                raise error from exc
            finally:
                sock = conn._sock
                if sock is not None:
                    sock.settimeout(conn.socket_timeout)
        raise AssertionError("unreachable")

    def _execute(self, command: Command, script: Script | None) -> Any:
        """A command through redis-py's client (Cluster: routing, MOVED, failover)."""
        client = self._client
        args = command()
        try:
            try:
                return client.execute_command(*args, **_options(args))
            except NoScriptError:
                assert script is not None
                return client.execute_command("EVAL", script.source, *args[2:], **_RAW)
        except Exception as exc:
            error = failure(exc)
            if error is exc:
                raise
            raise error from exc

    def _bounded(self, give_up: float, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread, waited for until ``give_up``: redis-py's Cluster
        client may retry, rediscover the nodes and reconnect for longer than the budget."""
        workers = self._workers
        if workers is None:
            workers = self._workers = concurrent.futures.ThreadPoolExecutor(
                _SLOW_WORKERS, thread_name_prefix="ratekeeper-redis"
            )

        def run() -> Any:
            if _clock() >= give_up:  # queued behind stuck calls until too late: do not send it
                raise timed_out(self.timeout)
            return fn(*args)

        future = workers.submit(run)
        try:
            return future.result(max(give_up - _clock(), 0.0))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise timed_out(self.timeout) from None

    def close(self) -> None:
        own, pool = self._own, self._pool
        if own is not None and pool is not None:
            self._own = None
            pool.release(own)
        workers, self._workers = self._workers, None
        if workers is not None:
            workers.shutdown(wait=False, cancel_futures=True)
        client = self._detach()
        if client is not None:
            for each in (client, *getattr(client, "_ratekeeper_also_close", ())):
                each.close()
                pool = getattr(each, "connection_pool", None)
                if pool is not None:
                    pool.disconnect()


def _options(args: tuple[Any, ...]) -> dict[str, Any]:
    """Scripts reply with packed doubles: never decode them (other commands as redis-py does)."""
    return _RAW if args[0] in ("EVALSHA", "EVAL") else {}


def _evalsha(script: Script, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, *args)


def _arm(conn: Any, give_up: float) -> None:
    """Connect ``conn`` if needed and set its socket's timeout to what is left of the budget."""
    left = give_up - _clock()
    if left <= 0:
        raise timed_out(0.0)
    if conn._sock is None:
        saved = conn.socket_connect_timeout, conn.socket_timeout, conn.retry
        conn.socket_connect_timeout = min(saved[0] or left, left)
        conn.socket_timeout = min(saved[1] or left, left)
        conn.retry = _NO_RETRY  # the caller's attempts are bounded by the budget instead
        try:
            conn.connect()
        finally:
            conn.socket_connect_timeout, conn.socket_timeout, conn.retry = saved
        left = give_up - _clock()
        if left <= 0:
            raise timed_out(0.0)
    conn._sock.settimeout(left)


class _Bound:
    """What an :class:`AsyncRedisStore` holds in one event loop: a client built in that loop
    (its connections, locks and futures belong to it), the pipeline queue and the loop's
    shutdown hook."""

    __slots__ = (
        "client",
        "flushes",
        "get_args",
        "hook",
        "in_flight",
        "pending",
        "pool",
        "scheduled",
    )

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pool: Any
        self.get_args: tuple[str, ...]
        self.pool, self.get_args = fast_pool(client)
        self.pending: list[_Item] = []
        self.scheduled = False
        self.in_flight = 0
        self.flushes: set[asyncio.Task[None]] = set()
        self.hook: Any = None


async def _until_shutdown(ref: weakref.ref[AsyncRedisStore], loop: Any) -> AsyncIterator[None]:
    """An async generator that the loop finalizes when it shuts down (``asyncio.run`` and
    ``asyncio.Runner`` do, before closing it): the moment to close what this loop opened."""
    try:
        yield
    finally:
        store = ref()
        if store is not None:
            await store._leave(loop)


class AsyncRedisStore(RedisCore):
    """The asyncio twin of :class:`RedisStore` on ``redis.asyncio`` (same arguments; ``client``
    is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``).

    With ``pipelining=True`` (the default; not on Cluster) the scripts that concurrent tasks
    call in one event-loop iteration go to Redis together, as one pipeline: each decision is
    still one atomic ``EVALSHA``, but many share a round trip and a connection.

    Every call finishes within ``socket_timeout`` (0.5 s) of its start, however many tasks
    wait: each waits for its own answer until its own deadline; a pipeline that times out fails
    the calls queued behind it at once.

    A store built from a URL may be used from several event loops, one after the other
    (``asyncio.run`` per request) or at once (one per thread): it builds a client per loop and
    closes it when ``asyncio.run`` shuts that loop down. A client passed in is used as it is.
    """

    _aio: ClassVar[bool] = True

    def _setup(self, prefix: str, time_source: TimeSource, pipelining: bool) -> None:
        super()._setup(prefix, time_source, pipelining)
        self._loops: weakref.WeakKeyDictionary[Any, _Bound] = weakref.WeakKeyDictionary()

    async def _here(self) -> _Bound:
        """The state of the running loop (set up on its first use)."""
        loop = asyncio.get_running_loop()
        bound = self._loops.get(loop)
        if bound is not None and (bound.client is not None or self._factory is None):
            return bound
        if self._factory is None:
            bound = _Bound(self._client)
        else:
            try:
                bound = _Bound(self._factory())
            except Exception as exc:
                raise failure(exc) from exc
        self._loops[loop] = bound
        hook = _until_shutdown(weakref.ref(self), loop)
        await hook.__anext__()
        bound.hook = hook  # kept alive: finalized by the loop's shutdown
        return bound

    async def _leave(self, loop: Any) -> None:
        """Close what ``loop`` opened (a URL-built store's client)."""
        bound = self._loops.pop(loop, None)
        if bound is None:
            return
        if bound.flushes:
            await asyncio.gather(*bound.flushes, return_exceptions=True)
        if self._factory is not None and bound.client is not None:
            await _close(bound.client)

    # -- decisions

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self._limit(key, rule, cost, now, True)

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self._limit(key, rule, cost, now, False)

    async def _limit(self, key: str, rule: Rule, cost: float, now: float, write: bool) -> Decision:
        give_up = _clock() + self.timeout
        bound = await self._here()
        deadline = await self._deadline(bound, give_up)
        if bound.pool is None:  # Cluster: redis-py's own path
            prepared, args = self.limit_command(key, rule, cost, now, write, deadline)
            return parse_decision(prepared, await self._run(bound, give_up, prepared.script, args))
        prepared, packet = self.limit_packet(key, rule, cost, now, write, deadline)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        bound.pending.append((packet, key, rule, cost, now, write, give_up, future))
        if not self._pipelining:
            self._launch(bound)
        elif not bound.scheduled and bound.in_flight < _MAX_PIPELINES:
            bound.scheduled = True
            loop.call_soon(self._launch, bound)
        try:
            async with asyncio.timeout(give_up - _clock()):
                reply = await future
        except TimeoutError:
            raise timed_out(self.timeout) from None
        return parse_decision(prepared, reply)

    async def _deadline(self, bound: _Bound, give_up: float) -> bytes:
        """As :meth:`RedisStore._deadline` (one task measures; the others do not wait)."""
        clock = self.server_clock
        if clock.stale(_clock()) and not clock.measuring:
            clock.measuring = True
            try:
                sent = _clock()
                reply = await self._command(bound, give_up, "TIME")
                clock.record(sent, _clock(), reply)
            finally:
                clock.measuring = False
        return clock.deadline(give_up)

    def _launch(self, bound: _Bound) -> None:
        """Send what the tasks queued during this loop iteration, as one pipeline."""
        bound.scheduled = False
        batch, bound.pending = bound.pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._flush(bound, batch))
            bound.flushes.add(task)
            task.add_done_callback(bound.flushes.discard)

    async def _flush(self, bound: _Bound, batch: list[_Item]) -> None:
        """Send a batch of pre-encoded commands on one connection and resolve their futures.
        Each command is its own atomic script call; a NOSCRIPT reply goes through the slow path
        (EVALSHA, then EVAL). Gives up when the last of the batch's callers does, and then fails
        the calls queued meanwhile too (they would wait on the same dead server)."""
        bound.in_flight += 1
        results: list[Any] = []
        conn: Any = None
        try:
            try:
                async with asyncio.timeout(max(item[6] for item in batch) - _clock()):
                    conn = await bound.pool.get_connection(*bound.get_args)
                    await conn.send_packed_command((b"".join(item[0] for item in batch),))
                    for _ in batch:
                        try:
                            results.append(await conn.read_response(disable_decoding=True))
                        except rex.ResponseError as exc:
                            results.append(exc)
            except BaseException as exc:
                if conn is not None:
                    await conn.disconnect()
                error: BaseException = (
                    timed_out(self.timeout) if isinstance(exc, TimeoutError) else failure(exc)
                )
                results += [error] * (len(batch) - len(results))
                if isinstance(exc, (TimeoutError, rex.TimeoutError)):
                    queued, bound.pending = bound.pending, []
                    for item in queued:
                        if not item[-1].done():
                            item[-1].set_exception(error)
                if not isinstance(exc, Exception):
                    raise
            else:
                if any(isinstance(r, BaseException) and _connection_broken(r) for r in results):
                    await conn.disconnect()
            finally:
                if conn is not None:
                    await bound.pool.release(conn)
            for (_, key, rule, cost, now, write, give_up, future), result in zip(
                batch, results, strict=True
            ):
                if future.done():  # the caller gave up or was cancelled
                    continue
                if isinstance(result, NoScriptError):
                    try:
                        _, args = self.limit_command(key, rule, cost, now, write, b"")
                        result = await self._run(bound, give_up, _script(rule), args)
                    except Exception as exc:
                        result = exc
                elif isinstance(result, BaseException):
                    if str(result).startswith("DEADLINE"):
                        self.server_clock.forget()
                    result = failure(result)
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            bound.in_flight -= 1
            for item in batch:  # never leave a waiter hanging
                if not item[-1].done():
                    item[-1].cancel()
            if bound.pending and not bound.scheduled:
                bound.scheduled = True
                asyncio.get_running_loop().call_soon(self._launch, bound)

    async def _run(
        self, bound: _Bound, give_up: float, script: Script, args: tuple[Any, ...]
    ) -> Any:
        """A script through redis-py's client, by ``give_up``."""
        try:
            return await self._command(bound, give_up, "EVALSHA", script.sha, *args)
        except NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL loads it again
            return await self._command(bound, give_up, "EVAL", script.source, *args)

    async def _command(self, bound: _Bound, give_up: float, *args: Any) -> Any:
        try:
            async with asyncio.timeout(give_up - _clock()):
                return await bound.client.execute_command(*args, **_options(args))
        except TimeoutError:
            raise timed_out(self.timeout) from None
        except NoScriptError:
            raise
        except Exception as exc:
            if str(exc).startswith("DEADLINE"):
                self.server_clock.forget()
            error = failure(exc)
            if error is exc:
                raise
            raise error from exc

    async def reset(self, key: str, rule: Rule) -> None:
        bound = await self._here()
        await self._command(bound, _clock() + self.timeout, "DEL", *self.reset_keys(key, rule))

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        give_up = _clock() + self.timeout
        bound = await self._here()
        deadline = await self._deadline(bound, give_up)
        args = self.acquire_command(key, lease_id, limit, ttl, now, deadline)
        return float(await self._run(bound, give_up, LEASE_ACQUIRE, args))

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        give_up = _clock() + self.timeout
        bound = await self._here()
        deadline = await self._deadline(bound, give_up)
        await self._run(
            bound, give_up, LEASE_RELEASE, self.release_command(key, lease_id, now, deadline)
        )

    async def ping(self) -> None:
        bound = await self._here()
        await self._command(bound, _clock() + self.timeout, "PING")

    async def close(self) -> None:
        """Close this loop's client (a URL-built store's); the store can be used again after."""
        loop = asyncio.get_running_loop()
        await self._leave(loop)
        for other in list(self._loops):  # other loops' clients: not usable from here
            if other.is_closed():
                self._loops.pop(other, None)


async def _close(client: Any) -> None:
    for each in (client, *getattr(client, "_ratekeeper_also_close", ())):
        try:
            await (getattr(each, "aclose", None) or each.close)()
            pool = getattr(each, "connection_pool", None)
            if pool is not None:
                await pool.disconnect()
        except Exception as exc:  # a dead server or an already closed client
            if not isinstance(exc, (*UNAVAILABLE, RuntimeError)):
                raise
