"""How the Redis stores reach the server: one command out, its reply back, by the caller's
deadline, on redis-py 5 to 8. Nothing here knows about rate limits.

The interface (the stores use nothing else):

- :class:`Script`: a Lua script and its SHA1, run like redis-py's ``Script``: ``EVALSHA``,
  then ``EVAL`` with the source after ``NOSCRIPT``.
- :class:`Call`: one script call: the script, its arguments after the SHA (``numkeys``, keys,
  argv), and optionally the same command already encoded (:func:`evalsha_head`, :func:`bulk`).
- :class:`Wire` and :class:`AsyncWire` (one per store, built from a client or a client
  factory): ``call(give_up, call)`` and ``command(give_up, *args)`` return the reply by
  ``give_up`` (:func:`time.monotonic` seconds) or raise `StoreUnavailable`; ``close()``.
- :func:`failure`: which redis-py errors mean "the server cannot answer now".

Inside, the fast path: a pre-encoded command goes out on a pooled connection and its reply is
read back, skipping redis-py's per-command machinery (on plain and Sentinel clients, and the
asyncio Cluster client's pipelines; otherwise a Cluster client, or one pinned to a single
connection, goes through redis-py's ``execute_command``).
Sync: one connection stays checked out for whichever thread finds it free (a lone caller skips
the pool's checkout and health check), forgotten in a forked child; the socket's timeout is what
is left of the budget; the Cluster client's calls run in worker threads that the caller stops
waiting for. Async: one client per event loop, closed when ``asyncio.run`` shuts the loop down;
the calls made in one loop iteration go out together as one pipeline (on a Cluster, one per
master, on a connection of the client's node for it).

The asyncio Cluster client (redis-py 7.x) routes a command sent before it knows the slots to a
random node: at a cold start, or after it dropped its topology (``aclose`` after a burst of
``MOVED`` or a ``CLUSTERDOWN``), tasks arriving together draw ``MOVED`` replies, and every fifth
one makes the client close all its nodes' connections, those other tasks are using included
("Connection closed by server", ``AttributeError: 'NoneType' object has no attribute
'writelines'``). So the wire has the client learn the slots first, one task at a time, bounds the
calls in flight (``max_calls``: callers wait for a slot within their deadline, rather than each
opening a connection per node), turns whatever else the client raises into `StoreUnavailable`,
keeps one node object per address (redis-py 7 and 8 route by new ones after re-learning the slots,
which nothing ever closes), and closes every node the client ever had.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import inspect
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from ratekeeper.errors import StoreUnavailable

__all__ = [
    "UNAVAILABLE",
    "AsyncWire",
    "Call",
    "Script",
    "Wire",
    "WireBase",
    "bulk",
    "evalsha_head",
    "failure",
    "number",
    "timed_out",
    "unavailable",
]

# Errors that mean "the server cannot be used right now": they become StoreUnavailable, so the
# limiter's on_store_error policy applies. (Script bugs and wrong arguments are not in here.)
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # includes AuthenticationError, BusyLoadingError, MaxConnectionsError
    rex.TimeoutError,
    rex.ClusterError,  # ClusterDownError, MasterDownError
    rex.RedisClusterException,  # "Redis Cluster cannot be connected", slots not covered
    rex.ReadOnlyError,  # a failover is in progress: we are talking to a replica
    rex.TryAgainError,
    rex.AuthenticationWrongNumberOfArgsError,
    rex.NoPermissionError,
    OSError,  # refused/reset sockets, builtin TimeoutError (asyncio timeouts)
)
# The error word of a script that refused to run because its caller had already given up.
REFUSED = "DEADLINE"
# Error replies (their first word) that mean "the server cannot answer now", not "the command is
# wrong": a script running too long (BUSY), a server loading its data set (LOADING), a replica
# cut from its master (MASTERDOWN), a demoted master after a failover (READONLY), a cluster
# migrating or failing over (TRYAGAIN, CLUSTERDOWN), a full server (OOM: no state can be written,
# so no decision can be made), a failing disk (MISCONF), too few replicas (NOREPLICAS), and
# the scripts' own REFUSED: the command reached the server after its caller had given up.
TRANSIENT_REPLIES = frozenset(
    {
        "BUSY",
        "LOADING",
        "MASTERDOWN",
        "READONLY",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "OOM",
        "MISCONF",
        "NOREPLICAS",
        REFUSED,
    }
)
_RAW = {"NEVER_DECODE": True}  # script replies carry packed doubles: never decode them as text
_MAX_PIPELINES = 4  # pipelines in flight at once per event loop; more callers queue for the next
_SLOW_WORKERS = 32  # threads running the sync Cluster client's calls, so that they can time out
_UNBOUNDED = 2**31  # redis-py's default max_connections: no bound
_NO_RETRY = Retry(NoBackoff(), 0)
_clock = time.monotonic  # deadlines: monotonic seconds (asyncio's loop.time() may differ)


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The `StoreUnavailable` that replaces a redis-py connection error."""
    return StoreUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}")


def timed_out(timeout: float) -> StoreUnavailable:
    return StoreUnavailable(f"redis unavailable: no answer within {timeout:g}s")


def failure(exc: BaseException) -> BaseException:
    """What a store raises for ``exc``: `StoreUnavailable` when the server cannot answer now
    (a connection error, a timeout, or an error reply of :data:`TRANSIENT_REPLIES`), else
    ``exc`` itself (a script bug or a wrong argument is not an outage)."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, UNAVAILABLE):
        return unavailable(exc)
    if isinstance(exc, rex.ResponseError) and str(exc).split(" ", 1)[0] in TRANSIENT_REPLIES:
        return unavailable(exc)
    if isinstance(exc, rex.ResponseError) and type(exc).__name__ == "OutOfMemoryError":
        return unavailable(exc)  # redis-py strips the "OOM" word from the message
    return exc


def _broken(exc: BaseException) -> bool:
    """Whether a connection that raised ``exc`` must be dropped: anything but a plain error
    reply (a transient one included: after READONLY or MASTERDOWN the next connection may
    reach the new master)."""
    return not isinstance(exc, rex.ResponseError) or failure(exc) is not exc


# --------------------------------------------------------------------------- scripts and calls


class Script:
    """A Lua script and its SHA1, for ``EVALSHA`` (``EVAL`` with the source on ``NOSCRIPT``)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:10]}>"


class Call:
    """One script call: ``EVALSHA script.sha *args``. ``packet``: the same command in RESP
    (:func:`evalsha_head` and :func:`bulk` build it), for the fast path; None to let the wire
    encode ``args`` itself."""

    __slots__ = ("args", "packet", "script")

    def __init__(self, script: Script, args: tuple[Any, ...], packet: bytes | None = None):
        self.script = script
        self.args = args
        self.packet = packet


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def number(value: float) -> bytes:
    """A number as redis-py would send it (``repr`` round-trips a float exactly)."""
    return b"%d" % value if type(value) is int else repr(value).encode()


def evalsha_head(script: Script, keys: Sequence[bytes], nargs: int) -> bytes:
    """The start of a pre-encoded :class:`Call` with ``nargs`` arguments after the keys:
    ``EVALSHA sha numkeys key...``; the arguments follow as :func:`bulk` strings."""
    parts = (b"EVALSHA", script.sha.encode(), b"%d" % len(keys), *keys)
    return b"*%d\r\n" % (len(parts) + nargs) + b"".join(map(bulk, parts))


def _options(args: Sequence[Any]) -> dict[str, Any]:
    """Scripts reply with packed doubles: never decode them (other commands as redis-py does)."""
    return _RAW if args[0] in ("EVALSHA", "EVAL") else {}


def _script_args(script: Script | None, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The whole command: ``EVALSHA sha *args`` for a script, else ``args`` as they are."""
    return args if script is None else ("EVALSHA", script.sha, *args)


# --------------------------------------------------------------------------- redis-py versions


def _pool_of(client: Any) -> tuple[Any, tuple[str, ...]]:
    """The connection pool of ``client`` for the fast path (None for a Cluster client or one
    pinned to a single connection), and the arguments its ``get_connection`` needs."""
    pool = getattr(client, "connection_pool", None)
    if pool is None or getattr(client, "connection", None) is not None:
        return None, ()
    if not all(hasattr(pool, name) for name in ("get_connection", "release")):
        return None, ()
    try:
        parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):
        return None, ()
    if parameter is not None and parameter.default is inspect.Parameter.empty:
        return pool, ("EVALSHA",)  # redis-py 5.0 to 5.2 want a command name
    return pool, ()


def _retries(conn: Any) -> int:
    """How many times ``conn``'s ``Retry`` retries (redis-py 6.1 added ``get_retries``)."""
    retry = conn.retry
    get = getattr(retry, "get_retries", None)
    return int(get() if get is not None else retry._retries)


class WireBase:
    """What both wires share: how they are built, and the reading of failures.

    ``client``: a redis-py client, or None with ``factory``, which builds them (on first use,
    and again after ``close()``). ``timeout``: the seconds of a whole call (for messages).
    ``refused`` is called when a script refused to run because its caller had given up.
    ``pipelining``: see :class:`AsyncWire` (no effect on the synchronous wire). ``max_calls``:
    calls in flight at once on an asyncio Cluster client (None: the client's own
    ``max_connections``); more callers wait for a slot, within their deadline.
    """

    def __init__(
        self,
        client: Any,
        factory: Callable[[], Any] | None,
        *,
        timeout: float,
        refused: Callable[[], None],
        pipelining: bool = True,
        max_calls: int | None = None,
    ) -> None:
        self.factory = factory
        self.timeout = timeout
        self._refused = refused
        self._pipelining = pipelining
        self._max_calls = max_calls
        self.client = client
        self._start()

    def _start(self) -> None:
        """Set up what the wire keeps (after the common attributes)."""

    def _failure(self, exc: BaseException) -> BaseException:
        """:func:`failure`, telling the owner when a script refused to run (``refused``)."""
        if str(exc).startswith(REFUSED):
            self._refused()
        return failure(exc)

    def _raised(self, exc: BaseException) -> BaseException:
        """What a command through redis-py's client raises for ``exc``: :meth:`_failure`, and
        `StoreUnavailable` for anything that is neither an error reply nor an argument redis-py
        refused to encode: its own slips under concurrency (an ``AttributeError`` from the asyncio
        Cluster client's connection handling) are no answer from the store either."""
        error = self._failure(exc)
        if error is exc and not isinstance(exc, (rex.ResponseError, rex.DataError)):
            return unavailable(exc)
        return error


# --------------------------------------------------------------------------- sync


def _forget_own(ref: weakref.ref[Wire]) -> None:
    wire = ref()
    if wire is not None:  # a forked child never uses its parent's connection or threads
        wire._own = None
        wire._own_lock = threading.Lock()
        wire._workers = None


class Wire(WireBase):
    """The synchronous wire over a ``redis.Redis`` (plain or Sentinel) or ``RedisCluster``
    client, or a factory of them."""

    def _start(self) -> None:
        self._connect_lock = threading.Lock()
        self._own: Any = None  # the connection kept checked out, and who holds it
        self._own_lock = threading.Lock()
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None
        self._bind(self.client)
        os.register_at_fork(after_in_child=functools.partial(_forget_own, weakref.ref(self)))

    def _bind(self, client: Any) -> None:
        self.client = client
        self._pool, self._get_args = _pool_of(client)

    def call(self, give_up: float, call: Call) -> Any:
        return self._send(give_up, call.script, call.args, call.packet)

    def command(self, give_up: float, *args: Any) -> Any:
        return self._send(give_up, None, args, None)

    def _send(
        self, give_up: float, script: Script | None, args: tuple[Any, ...], packet: bytes | None
    ) -> Any:
        if self.client is None:
            self._bounded(give_up, self._connect)
        pool = self._pool
        if pool is None:  # Cluster, or a client pinned to one connection: redis-py's own path
            return self._bounded(give_up, self._execute, script, args)
        lock = self._own_lock
        if lock.acquire(False):
            try:
                if self._own is None:
                    self._own = self._checkout(pool)
                return self._exchange(self._own, give_up, script, args, packet)
            finally:
                lock.release()
        conn = self._checkout(pool)
        try:
            return self._exchange(conn, give_up, script, args, packet)
        finally:
            pool.release(conn)

    def _connect(self) -> None:
        """Build the client (first use, or after close())."""
        assert self.factory is not None
        with self._connect_lock:  # threads arriving together build one client
            if self.client is None:
                try:
                    self._bind(self.factory())
                except UNAVAILABLE as exc:
                    raise unavailable(exc) from exc

    def _checkout(self, pool: Any) -> Any:
        try:
            return pool.get_connection(*self._get_args)
        except Exception as exc:
            raise failure(exc) from exc

    def _exchange(
        self,
        conn: Any,
        give_up: float,
        script: Script | None,
        args: tuple[Any, ...],
        packet: bytes | None,
    ) -> Any:
        """One command on ``conn``, within the budget; after a connection error (a server that
        restarted), once more on a fresh connection if ``retries`` allows and time is left."""
        attempts = 1 + min(_retries(conn), 1)
        for attempt in range(attempts):
            try:
                _arm(conn, give_up)
                if packet is None:
                    command = conn.pack_command(*_script_args(script, args))
                    conn.send_packed_command(command, check_health=False)
                else:
                    conn.send_packed_command((packet,), check_health=False)
                try:
                    return conn.read_response(disable_decoding=True)
                except rex.NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL loads it again
                    assert script is not None
                    eval_ = conn.pack_command("EVAL", script.source, *args)
                    conn.send_packed_command(eval_, check_health=False)
                    return conn.read_response(disable_decoding=True)
            except BaseException as exc:
                if _broken(exc):
                    conn.disconnect()
                error = self._failure(exc)
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

    def _execute(self, script: Script | None, args: tuple[Any, ...]) -> Any:
        """A command through redis-py's client (Cluster: routing, MOVED, failover)."""
        client = self.client
        command = _script_args(script, args)
        try:
            try:
                return client.execute_command(*command, **_options(command))
            except rex.NoScriptError:
                assert script is not None
                return client.execute_command("EVAL", script.source, *args, **_RAW)
        except Exception as exc:
            error = self._raised(exc)
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
        """Give back the kept connection, stop the workers, and close the client if this wire
        built it (it builds a new one on next use); a client it was given stays open."""
        own, pool = self._own, self._pool
        if own is not None and pool is not None:
            self._own = None
            pool.release(own)
        workers, self._workers = self._workers, None
        if workers is not None:
            workers.shutdown(wait=False, cancel_futures=True)
        client = self.client
        if self.factory is None or client is None:
            return
        self._bind(None)
        for each in (client, *getattr(client, "_ratekeeper_also_close", ())):
            each.close()
            pool = getattr(each, "connection_pool", None)
            if pool is not None:
                pool.disconnect()


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


# --------------------------------------------------------------------------- asyncio

# a queued call: its packet, the call, its caller's give-up time, and the caller's future
_Item: TypeAlias = tuple[bytes, Call, float, "asyncio.Future[Any]"]
# Error replies of a Cluster node that mean a pipelined script did not run there (not loaded, or
# its slot is migrating): redis-py's own path sends it again (EVAL after NOSCRIPT, ASKING after
# ASK, a pause after TRYAGAIN). CLUSTERDOWN is an outage (StoreUnavailable): redis-py's answer,
# closing every connection then retrying, would send again calls that other tasks had in flight.
_RESEND: tuple[type[BaseException], ...] = (
    rex.NoScriptError,
    rex.AskError,  # MovedError is one too, but goes to the next pipeline of its new master
    rex.TryAgainError,
)


class _Queue:
    """The calls waiting to go to one server as one pipeline (standalone: the client's pool;
    Cluster: one master, ``node``), and how many of its pipelines are in flight."""

    __slots__ = ("in_flight", "node", "pending", "scheduled")

    def __init__(self, node: Any = None) -> None:
        self.node = node
        self.pending: list[_Item] = []
        self.scheduled = False
        self.in_flight = 0


class _Loop:
    """What an :class:`AsyncWire` holds in one event loop: a client built in that loop (its
    connections, locks and futures belong to it), the pipeline queues (one, or a Cluster's one
    per master, by address), the loop's shutdown hook, and for a Cluster client: the gate of its
    calls in flight, the lock under which one task at a time has it learn the slots, and every
    node it ever had (by id)."""

    __slots__ = (
        "client",
        "flushes",
        "gate",
        "get_args",
        "hook",
        "learning",
        "nodes",
        "pool",
        "queue",
        "queues",
        "seeds",
        "slots",
    )

    def __init__(self, client: Any, max_calls: int | None, own: bool) -> None:
        self.client = client
        self.pool: Any
        self.get_args: tuple[str, ...]
        self.pool, self.get_args = _pool_of(client)
        self.queue = _Queue()  # the pool's (standalone, Sentinel)
        self.queues: dict[str, _Queue] = {}  # a Cluster's, by node name
        self.flushes: set[asyncio.Task[None]] = set()
        self.hook: Any = None
        self.gate: asyncio.Semaphore | None = None
        self.learning = asyncio.Lock()
        self.seeds: dict[str, Any] = {}  # a Cluster client's first startup nodes
        self.nodes: dict[int, Any] = {}
        self.slots: Any = None  # the Cluster client's slot table when its nodes were noted
        manager = getattr(client, "nodes_manager", None)
        if manager is not None:  # a Cluster client
            if max_calls is None:
                max_calls = int(manager.connection_kwargs.get("max_connections", _UNBOUNDED))
            self.gate = asyncio.Semaphore(max_calls)
            self.seeds = dict(manager.startup_nodes)
            if own:
                manager.__class__ = _one_node_per_address(type(manager))

    def node_queue(self, key: bytes) -> _Queue | None:
        """The queue of the master serving ``key``'s slot, by the Cluster client's slot table;
        None while that table is not to be trusted (never learnt, dropped, or due to be learnt
        again after a connection error: redis-py's own path learns it) or misses the slot."""
        client = self.client
        if client.get_default_node() is None or getattr(client, "_initialize", False):
            return None
        try:
            node = client.nodes_manager.get_node_from_slot(key_slot(key))
        except rex.RedisClusterException:  # the slot is not covered
            return None
        queue = self.queues.get(node.name)
        if queue is None:
            queue = self.queues[node.name] = _Queue(node)
        queue.node = node  # the slot table's object (a new one after re-learning the slots)
        return queue

    def remember_nodes(self) -> None:
        """Note the Cluster client's nodes, for :meth:`AsyncWire.close`: its ``aclose`` closes
        none while it is re-learning the slots, and none it dropped from its tables (a failed
        master: only its idle connections were closed then). Once it re-learnt the slots, the
        remembered nodes with nothing open are forgotten."""
        manager = self.client.nodes_manager
        if manager.slots_cache is not self.slots:
            self.slots = manager.slots_cache
            self.nodes = {key: node for key, node in self.nodes.items() if not _idle(node)}
        for node in (*manager.nodes_cache.values(), *manager.startup_nodes.values()):
            self.nodes[id(node)] = node


_MANAGERS: dict[
    type[Any], type[Any]
] = {}  # redis-py's NodesManager class -> _one_node_per_address's


def _one_node_per_address(manager: type[Any]) -> type[Any]:
    """A subclass of redis-py's asyncio Cluster ``NodesManager`` (assigned to a client's manager,
    same slots) whose ``initialize`` points the new slot table at the nodes of the node table.

    redis-py 7 and 8 re-learning the slots keep the node objects they know in their node table,
    but install a slot table of new node objects of the same addresses, which they route by and
    no table holds: their connections are never closed (a ResourceWarning each as they are
    collected, after every re-learning: at each failover). Nothing awaits between the install
    and the re-pointing, so no task routes by the new objects meanwhile.
    """
    subclass = _MANAGERS.get(manager)
    if subclass is None:

        async def initialize(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = await manager.initialize(self, *args, **kwargs)
            known = self.nodes_cache
            for group in {id(group): group for group in self.slots_cache.values()}.values():
                for i, node in enumerate(group):
                    same = known.get(node.name)
                    if same is not None and same is not node:
                        same.server_type = node.server_type  # a replica promoted, or demoted
                        group[i] = same
            return result

        namespace = {"__slots__": (), "initialize": initialize}
        subclass = _MANAGERS[manager] = type(manager.__name__, (manager,), namespace)
    return subclass


def _idle(node: Any) -> bool:
    """Whether a Cluster node has no open connection (what its ``__del__`` warns about)."""
    return not any(conn.is_connected for conn in node._connections)


async def _until_shutdown(ref: weakref.ref[AsyncWire], loop: Any) -> AsyncIterator[None]:
    """An async generator that the loop finalizes when it shuts down (``asyncio.run`` and
    ``asyncio.Runner`` do, before closing it): the moment to close what this loop opened."""
    try:
        yield
    finally:
        wire = ref()
        if wire is not None:
            await wire._leave(loop)


class AsyncWire(WireBase):
    """The asyncio wire over a ``redis.asyncio`` client or a factory of them.

    A factory's client belongs to the event loop that built it: the wire builds one per loop
    (used one after the other, ``asyncio.run`` per request, or at once, one per thread) and
    closes it when ``asyncio.run`` shuts that loop down. A client given is used as it is.

    With ``pipelining`` the pre-encoded calls that tasks make in one loop iteration go to Redis
    together, as one pipeline: each is still its own atomic script call, but many share a round
    trip and a connection. On a Cluster, one pipeline per master, of the calls whose keys' slots
    it serves by the client's slot table (each call's keys are in one slot). A call answered
    ``MOVED`` goes in the next pipeline of the master named (the slot table told, as redis-py's
    own MOVED handling does); one that could not reach its node, or that the node answered
    ``ASK`` or ``TRYAGAIN``, goes through redis-py's own path (which learns the slots again after
    a connection error), and so does every call while the client is due to learn them.

    Each caller waits for its own reply until its own deadline; a pipeline that times out fails
    the calls queued behind it for the same server at once (a Cluster's other masters go on).
    """

    def _start(self) -> None:
        self._loops: weakref.WeakKeyDictionary[Any, _Loop] = weakref.WeakKeyDictionary()

    async def call(self, give_up: float, call: Call) -> Any:
        here = await self._here()
        packet = call.packet
        if packet is None:
            return await self._script(here, give_up, call.script, call.args)
        if here.pool is not None:
            queue: _Queue | None = here.queue
        elif here.gate is not None and self._pipelining and call.args[0]:
            queue = await self._node_queue(here, give_up, call.args[1])
        else:
            queue = None
        if queue is None:  # redis-py's own path
            return await self._script(here, give_up, call.script, call.args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        item = (packet, call, give_up, future)
        if not self._pipelining or (
            not queue.in_flight and not queue.pending and not queue.scheduled
        ):
            # Nothing in flight to this server: this task sends its call itself (a pipeline of
            # one, by its own deadline), with no hand-off to a flushing task; calls made
            # meanwhile queue up for the next pipeline as usual.
            await self._flush(here, queue, [item])
            if future.done():
                return future.result()
        else:
            self._enqueue(here, queue, item)
        try:
            async with asyncio.timeout(give_up - _clock()):
                return await future
        except TimeoutError:
            raise timed_out(self.timeout) from None

    def _enqueue(self, here: _Loop, queue: _Queue, item: _Item) -> None:
        """Queue a call for the next pipeline to its server (at once when not pipelining)."""
        queue.pending.append(item)
        if not self._pipelining:
            self._launch(here, queue)
        elif not queue.scheduled and queue.in_flight < _MAX_PIPELINES:
            queue.scheduled = True
            asyncio.get_running_loop().call_soon(self._launch, here, queue)

    async def _node_queue(self, here: _Loop, give_up: float, key: bytes) -> _Queue | None:
        """The pipeline queue of the Cluster master serving ``key``, once the client knows the
        slots (learnt first, by ``give_up``, when a cold start or a dropped topology left it
        none); None: redis-py's own path, which re-learns them after a connection error."""
        queue = here.node_queue(key)
        if queue is None and here.client.get_default_node() is None:
            await self._guarded(give_up, self._learn(here))
            queue = here.node_queue(key)
        return queue

    async def command(self, give_up: float, *args: Any) -> Any:
        return await self._execute(await self._here(), give_up, args)

    async def _here(self) -> _Loop:
        """The state of the running loop (set up on its first use)."""
        loop = asyncio.get_running_loop()
        here = self._loops.get(loop)
        if here is not None:
            return here
        if self.factory is None:
            here = _Loop(self.client, self._max_calls, own=False)
        else:
            try:
                here = _Loop(self.factory(), self._max_calls, own=True)
            except Exception as exc:
                raise failure(exc) from exc
        self._loops[loop] = here
        hook = _until_shutdown(weakref.ref(self), loop)
        await hook.__anext__()
        here.hook = hook  # kept alive: finalized by the loop's shutdown
        return here

    async def _leave(self, loop: Any) -> None:
        """Close what ``loop`` opened (a factory's client)."""
        here = self._loops.pop(loop, None)
        if here is None:
            return
        if here.flushes:
            await asyncio.gather(*here.flushes, return_exceptions=True)
        if self.factory is not None:
            await _close(here.client)
            if here.gate is not None:
                here.remember_nodes()
                await asyncio.gather(
                    *(node.disconnect() for node in here.nodes.values()), return_exceptions=True
                )

    def _launch(self, here: _Loop, queue: _Queue) -> None:
        """Send what the tasks queued for one server during this loop iteration, as one
        pipeline."""
        queue.scheduled = False
        batch, queue.pending = queue.pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._flush(here, queue, batch))
            here.flushes.add(task)
            task.add_done_callback(here.flushes.discard)

    async def _flush(self, here: _Loop, queue: _Queue, batch: list[_Item]) -> None:
        """Send a batch of pre-encoded calls on one connection and resolve their futures.
        A NOSCRIPT reply goes through redis-py's client (EVALSHA, then EVAL), and so does, on a
        Cluster, a call that never reached the node (no connection) or that the node redirected
        (:data:`_RESEND`: it did not run there); one answered MOVED goes to the next pipeline of
        the master named (:meth:`_moved`). Gives up when the last of the batch's callers
        does, and then fails the calls queued for the same server meanwhile too (they would wait
        on the same dead server); a Cluster's other masters are not waited for."""
        queue.in_flight += 1
        node, gate = queue.node, here.gate
        results: list[Any] = []
        moved: set[int] = set()  # the calls queued again, for the node a MOVED named (by id)
        conn: Any = None
        gated = False
        try:
            try:
                async with asyncio.timeout(max(item[2] for item in batch) - _clock()):
                    if node is None:
                        conn = await here.pool.get_connection(*here.get_args)
                    else:  # one of the Cluster client's calls in flight
                        assert gate is not None
                        await gate.acquire()
                        gated = True
                        conn = node.acquire_connection()
                    if node is None or await _connect(conn):
                        await conn.send_packed_command((b"".join(item[0] for item in batch),))
                        for _ in batch:
                            try:
                                results.append(await conn.read_response(disable_decoding=True))
                            except rex.ResponseError as exc:
                                results.append(exc)
                    else:  # nothing was sent: redis-py's path (it learns the slots again)
                        results = [_UNSENT] * len(batch)
            except BaseException as exc:
                if conn is not None:
                    await conn.disconnect()
                error: BaseException = (
                    timed_out(self.timeout) if isinstance(exc, TimeoutError) else failure(exc)
                )
                results += [error] * (len(batch) - len(results))
                if isinstance(exc, (TimeoutError, rex.TimeoutError)):
                    queued, queue.pending = queue.pending, []
                    for item in queued:
                        if not item[3].done():
                            item[3].set_exception(error)
                if not isinstance(exc, Exception):
                    raise
            else:
                if any(isinstance(r, BaseException) and _broken(r) for r in results):
                    await conn.disconnect()
            finally:
                if conn is not None:
                    if node is None:
                        await here.pool.release(conn)
                    else:
                        _release(node, conn)
                if gated:
                    assert gate is not None
                    gate.release()
            again: list[_Item] = []  # through redis-py's client, each on its own
            resend = (rex.NoScriptError,) if node is None else _RESEND
            for item, result in zip(batch, results, strict=True):
                future = item[3]
                if future.done():  # the caller gave up or was cancelled
                    continue
                if node is not None and isinstance(result, rex.MovedError):
                    if self._moved(here, node, item, result):
                        moved.add(id(item))
                    else:
                        again.append(item)
                elif result is _UNSENT or isinstance(result, resend):
                    again.append(item)
                elif isinstance(result, BaseException):
                    future.set_exception(self._failure(result))
                else:
                    future.set_result(result)
            if again:
                await asyncio.gather(*(self._again(here, item) for item in again))
        finally:
            queue.in_flight -= 1
            for item in batch:  # never leave a waiter hanging
                if not item[3].done() and id(item) not in moved:
                    item[3].cancel()
            if queue.pending and not queue.scheduled:
                queue.scheduled = True
                asyncio.get_running_loop().call_soon(self._launch, here, queue)

    def _moved(self, here: _Loop, node: Any, item: _Item, error: rex.MovedError) -> bool:
        """Queue a call that ``node`` answered ``MOVED`` (it did not run) for the master the
        reply names, once the client's slot table has learnt the move as redis-py's own MOVED
        handling teaches it, without the full re-learning that its every fifth MOVED does
        (closing connections other calls are using: they were sent again, charged twice).
        False when the table names no other master: redis-py's own path then."""
        manager = here.client.nodes_manager
        move = getattr(manager, "move_slot", None)  # redis-py 7 and 8
        if move is not None:
            move(error)
        elif hasattr(manager, "update_moved_exception"):  # redis-py 6.4
            manager.update_moved_exception(error)
        else:  # redis-py 5.0 to 6.3: applied at its next slot lookup
            manager._moved_exception = error
        queue = here.node_queue(item[1].args[1])
        here.remember_nodes()
        if queue is None or queue.node.name == node.name:
            return False
        self._enqueue(here, queue, item)
        return True

    async def _again(self, here: _Loop, item: _Item) -> None:
        """One call of a pipeline through redis-py's client, by its caller's deadline."""
        _, call, give_up, future = item
        try:
            result = await self._script(here, give_up, call.script, call.args)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)

    async def _script(
        self, here: _Loop, give_up: float, script: Script, args: tuple[Any, ...]
    ) -> Any:
        """A script through redis-py's client, by ``give_up``."""
        try:
            return await self._execute(here, give_up, ("EVALSHA", script.sha, *args))
        except rex.NoScriptError:  # after SCRIPT FLUSH or a restart: EVAL loads it again
            return await self._execute(here, give_up, ("EVAL", script.source, *args))

    async def _execute(self, here: _Loop, give_up: float, args: tuple[Any, ...]) -> Any:
        if here.gate is None:
            return await self._guarded(
                give_up, here.client.execute_command(*args, **_options(args))
            )
        return await self._guarded(give_up, self._on_cluster(here, args))

    async def _guarded(self, give_up: float, work: Awaitable[Any]) -> Any:
        """``work`` by ``give_up``; its errors as the store raises them (:meth:`_raised`)."""
        try:
            async with asyncio.timeout(give_up - _clock()):
                return await work
        except TimeoutError:
            raise timed_out(self.timeout) from None
        except rex.NoScriptError:
            raise
        except Exception as exc:
            error = self._raised(exc)
            if error is exc:
                raise
            raise error from exc

    async def _on_cluster(self, here: _Loop, args: tuple[Any, ...]) -> Any:
        """A command through a Cluster client that knows the slots (:meth:`_learn`), as one of
        its calls in flight."""
        assert here.gate is not None
        client = here.client
        async with here.gate:
            try:
                if client.get_default_node() is None:
                    await self._learn(here)
                return await client.execute_command(*args, **_options(args))
            finally:
                here.remember_nodes()

    async def _learn(self, here: _Loop) -> None:
        """Have a Cluster client without a default node learn the slots: cold, or its topology
        dropped, redis-py 7 sends a keyed command to a random node, so one task at a time has
        it learn them first while the others wait. redis-py 5.0 drops every node that failed a
        command from its startup nodes: once none is left it could never learn them again, so it
        gets the first ones back."""
        client = here.client
        try:
            async with here.learning:
                if client.get_default_node() is None:
                    startup = client.nodes_manager.startup_nodes
                    if not startup:
                        startup.update(here.seeds)
                    await client.initialize()
        finally:
            here.remember_nodes()

    async def close(self) -> None:
        """Close this loop's client (a factory's); the wire builds another on next use."""
        await self._leave(asyncio.get_running_loop())
        for other in list(self._loops):  # other loops' clients: not usable from here
            if other.is_closed():
                self._loops.pop(other, None)


_UNSENT = object()  # the result of a pipelined call that never left: no connection to its node


async def _connect(conn: Any) -> bool:
    """Whether a Cluster node's connection is connected, connecting it if needed (first after a
    disconnection that redis-py 7 marked it for, when its node failed): False if the node
    refused (nothing was sent)."""
    should_reconnect = getattr(conn, "should_reconnect", None)  # redis-py 7
    if should_reconnect is not None and should_reconnect():
        await conn.disconnect()
    if conn.is_connected:
        return True
    try:
        await conn.connect()
    except rex.ConnectionError:
        return False
    return True


def _release(node: Any, conn: Any) -> None:
    """Give a connection back to its Cluster node (redis-py 5 has no ``release``)."""
    release = getattr(node, "release", None)
    if release is not None:
        release(conn)
    else:
        node._free.append(conn)


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
