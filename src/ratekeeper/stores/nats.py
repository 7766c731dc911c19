"""NATS JetStream key-value stores (``nats://``): asyncio first, plus a synchronous wrapper.

Layout: one KV entry per user key, holding every limit state of that key (for every rule that
uses it) and its concurrency leases, as JSON. A decision reads the entry, runs the pure Python
algorithms (:func:`ratekeeper.algorithms.evaluate`) and writes the result back with a
compare-and-swap on the entry's revision (``kv.create`` for a new key, ``kv.update(...,
last=revision)`` otherwise). A conflict means another app server wrote first: re-read and retry,
with jittered backoff, at most ``max_retries`` times. Because all limits of a key live in one
entry, a multi-limit decision is all-or-nothing; a denial writes nothing.

Consistency: linearizable per user key (every admitted request is one successful CAS on one
entry; no update is lost). NATS offers no server clock to read inside a CAS loop, so time is the
caller's clock (the limiter's ``clock``, wall time by default): app servers whose clocks are
skewed by d seconds disagree about refills by d (a token bucket may refill up to d x rate early
or late; fixed windows switch d seconds apart). Keep app server clocks NTP-synchronized.

Keys: KV key names allow only ``[-/_=.A-Za-z0-9]``, so a user key is stored as ``k`` +
base64url(UTF-8 key), or ``h`` + sha256 hex when that would be longer than 200 characters.

Expiry: each limit state records when it is fully replenished and is dropped on the next write
of its entry after that; the bucket is created with ``ttl`` (max age, default one day) so that an
entry idle that long disappears. ``ttl`` must be at least the longest period you use.

Deadline: every call (a decision with its CAS retries, a reset, a lease) finishes within
``timeout`` (0.5 s) of its start, the wait for its key's turn and for the connection included,
however many callers wait, or raises :class:`~ratekeeper.StoreUnavailable`. A server that is
down or restarting raises at once while the client is reconnecting; the client reconnects by
itself (``connect_timeout``, 1 s, bounds each attempt in the background). A bad URL, an
unreachable host or refused credentials raise `StoreUnavailable` at first use (or ``ping()``).

Event loops: the connection belongs to the loop that opened it. The store may be used from
several loops one after the other (``asyncio.run`` per request): the first call in a new loop
connects again, and ``asyncio.run``'s shutdown of the old loop closes the old connection. (A
connection passed as ``nc=`` is the caller's, used as it is.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import Future
from contextlib import AsyncExitStack
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from ratekeeper.algorithms import State, evaluate
from ratekeeper.algorithms.checks import CHARGE, HIT, REFUND, Check, Slot, evaluate_checks
from ratekeeper.algorithms.concurrency import acquire_lease, release_lease
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.base import Applied, Rule

__all__ = ["AsyncNatsStore", "NatsStore", "kv_key"]

T = TypeVar("T")

_URL_OPTIONS = {"bucket": str, "ttl": float, "max_retries": int, "timeout": float}
_MAX_PLAIN_KEY = 200
_CACHE_SIZE = 10_000
# Errors that mean "the server cannot be used right now".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    nats.errors.Error,  # timeouts, no servers, connection closed, no responders, JS API errors
    OSError,
    asyncio.TimeoutError,
)
_LOOP_SLACK = 0.1  # seconds a sync caller waits beyond the deadline for the loop thread's answer
_clock = time.monotonic  # deadlines: monotonic seconds
_CONFLICT = nats.js.errors.KeyWrongLastSequenceError
_MISSING = nats.js.errors.KeyNotFoundError  # KeyDeletedError included


class _Client(NATS):
    """nats-py's client, minus a socket leak: a reconnect attempt that connected but then failed
    (EOF or a timeout before the server's INFO, as on a half-closed link) leaves its socket open,
    and the next attempt's ``TcpTransport.connect`` overwrites the writer without closing it (the
    socket is freed only by the garbage collector, with a ``ResourceWarning``). Every attempt now
    closes what the previous one left; at that point that connection is dead by definition."""

    async def _connect_to_server(self, *args: Any, **kwargs: Any) -> None:
        transport: Any = self._transport
        if transport is not None:
            transport.close()  # idempotent; nats-py has closed it already after a live connection
        await super()._connect_to_server(*args, **kwargs)


def kv_key(key: str) -> str:
    """The KV key name of a user key (see the module docstring)."""
    raw = key.encode("utf-8", "surrogatepass")
    encoded = "k" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if len(encoded) <= _MAX_PLAIN_KEY:
        return encoded
    return "h" + hashlib.sha256(raw).hexdigest()


def _thaw(value: Any) -> State:
    """JSON lists back into the tuples the algorithms use."""
    if isinstance(value, list):
        return tuple(_thaw(item) for item in value)
    return value


class _Entry:
    """The decoded value of one KV entry: ``{part: [state, expires_at]}`` and the leases."""

    __slots__ = ("leases", "now", "parts", "revision")

    def __init__(self, data: bytes | None, revision: int) -> None:
        self.revision = revision
        self.now = -float("inf")  # states that expired by then are dropped when writing
        doc = json.loads(data) if data else {}
        self.parts: dict[str, list[Any]] = doc.get("s", {})
        self.leases: State = _thaw(doc.get("l")) or None

    def state(self, part: str, now: float) -> State:
        item = self.parts.get(part)
        if item is None or item[1] <= now:
            return None
        return _thaw(item[0])

    def encode(self) -> bytes:
        now = self.now
        parts = {part: item for part, item in self.parts.items() if item[1] > now}
        doc: dict[str, Any] = {"s": parts}
        if self.leases:
            doc["l"] = self.leases
        return json.dumps(doc, separators=(",", ":")).encode()


def _split_url(url: str, options: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "nats":
        raise ConfigError(f"not a NATS URL: {url!r}")
    ours: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = _URL_OPTIONS.get(name)
        if kind is None:
            raise ConfigError(f"unknown option {name!r} in NATS URL {url!r}")
        try:
            ours[name] = kind(value)
        except ValueError:
            raise ConfigError(f"bad value for {name!r} in NATS URL {url!r}") from None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigError(f"NATS URL {url!r} names no server")
    servers = [f"nats://{host}" for host in hosts.split(",")]
    if userinfo:
        user, _, password = userinfo.partition(":")
        ours.setdefault("user", unquote(user))
        if password:
            ours.setdefault("password", unquote(password))
    return servers, {**ours, **options}


async def _swap(kv: Any, name: str, data: bytes, last: int) -> int:
    """Write ``data`` if nobody wrote ``name`` since revision ``last`` was read (create it when
    ``last`` is 0: a new key); returns the new revision, or raises one of ``_CONFLICT``."""
    if last:
        return int(await kv.update(name, data, last=last))
    return int(await kv.create(name, data))


class AsyncNatsStore:
    """asyncio store on a JetStream KV bucket (see the module docstring for the model).

    Options: ``bucket`` (default ``"ratekeeper"``), ``ttl`` (bucket max age in seconds, default
    86400), ``max_retries`` (CAS attempts, default 64), ``timeout`` (per request, 0.5 s),
    ``connect_timeout`` (1 s), ``user``/``password``/``token``, or an existing connection as
    ``nc=`` (not closed by the store).
    """

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        bucket: str = "ratekeeper",
        ttl: float = 86400.0,
        max_retries: int = 64,
        timeout: float = 0.5,
        connect_timeout: float = 1.0,
        nc: Any = None,
        **connect_options: Any,
    ) -> None:
        if not bucket or not all(c.isalnum() or c in "-_" for c in bucket):
            raise ConfigError(f"bucket must be a name of letters, digits, - and _, got {bucket!r}")
        if not ttl > 0 or not max_retries >= 1 or not timeout > 0 or not connect_timeout > 0:
            raise ConfigError("ttl, timeout and connect_timeout must be > 0, max_retries >= 1")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.bucket = bucket
        self.ttl = float(ttl)
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self._connect_options = connect_options
        self._nc: Any = nc
        self._owns_nc = nc is None
        self._kv: Any = None
        self._connecting: asyncio.Future[Any] | None = None
        self._connect_deadline = 0.0
        self._errors: dict[str, None] = {}
        self._locks: dict[str, list[Any]] = {}  # kv key -> [lock, users]
        self._cache: dict[str, tuple[int, bytes]] = {}  # kv key -> what this store last wrote
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the connection
        self._hook: Any = None  # closes the connection when that loop shuts down

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncNatsStore:
        """A store for ``nats://[user:password@]host:port[,host2:port]?bucket=…&ttl=…``; keyword
        ``options`` win over the URL's query, and unknown ones go to ``nats.connect``."""
        servers, options = _split_url(url, options)
        return cls(servers, **options)

    # -- connection ----------------------------------------------------------------------------

    async def _connect(self) -> Any:
        """Connect (nats-py retries for ever, in the background of the callers' bounded waits),
        then open the bucket, creating it if missing."""
        nc = self._nc
        if nc is None:
            nc = self._nc = _Client()

            async def record(exc: Exception) -> None:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # nats-py's connect loop can swallow a cancellation (asyncio.wait_for in
                    # Python 3.11 loses it when the attempt fails at the same moment) and go on
                    # for ever: asyncio.run() would hang shutting the loop down.
                    raise asyncio.CancelledError
                errors = self._errors
                errors.pop(_describe(exc), None)
                errors[_describe(exc)] = None  # the distinct recent errors, newest last
                while len(errors) > 3:
                    del errors[next(iter(errors))]

            options: dict[str, Any] = {
                "connect_timeout": self.connect_timeout,
                "allow_reconnect": True,
                "max_reconnect_attempts": -1,  # reconnect for ever, in the background
                "reconnect_time_wait": 0.25,
                "error_cb": record,
                "disconnected_cb": _quiet,
                "reconnected_cb": _quiet,
                "closed_cb": _quiet,
                **self._connect_options,
            }
            await nc.connect(self.servers, **options)
        js = nc.jetstream(timeout=self.timeout)
        try:
            return await js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            pass
        try:
            return await js.create_key_value(bucket=self.bucket, history=1, ttl=self.ttl)
        except nats.js.errors.BadRequestError:  # created at the same time with another config
            return await js.key_value(self.bucket)

    async def _enter_loop(self) -> None:
        """Called when the running loop is not the connection's: forget the old loop's connection
        (its loop closes it as it shuts down, see :func:`_until_shutdown`) and arm the same hook
        in this loop."""
        loop = asyncio.get_running_loop()
        if self._owns_nc:
            self._nc = self._kv = self._connecting = None
        self._locks = {}
        self._loop = loop
        hook = _until_shutdown(weakref.ref(self), loop)
        await hook.__anext__()
        self._hook = hook  # kept alive: finalized by the loop's shutdown

    async def _leave_loop(self, loop: asyncio.AbstractEventLoop, nc: Any) -> None:
        if self._loop is loop:
            self._nc = self._kv = self._connecting = None
            self._loop = None
        if nc is not None and self._owns_nc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), self.timeout)

    def _no_answer(self, what: str) -> StoreUnavailable:
        errors = "; ".join(self._errors)
        detail = f" (recent errors: {errors})" if errors else ""
        return StoreUnavailable(f"nats unavailable: {what}{detail}")

    async def _bucket(self) -> Any:
        if self._loop is not asyncio.get_running_loop():
            await self._enter_loop()
        kv = self._kv
        if kv is not None:
            if self._nc.is_connected:
                return kv
            raise StoreUnavailable("nats unavailable: the connection is down (reconnecting)")
        if self._closed:
            raise StoreUnavailable("nats store is closed")
        task = self._connecting
        loop = asyncio.get_running_loop()
        if task is None or task.done():
            self._errors.clear()
            task = self._connecting = asyncio.ensure_future(self._connect())
            task.add_done_callback(_retrieve)  # a failure is reported to the waiting callers
            self._connect_deadline = loop.time() + self.connect_timeout
        # Wait until the first caller's deadline; once it passed (the server is down or slow,
        # and nats-py keeps trying in the background) answer soon.
        wait = max(self._connect_deadline - loop.time(), min(self.connect_timeout, 0.1))
        try:
            self._kv = await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            servers = ", ".join(self.servers)
            raise self._no_answer(f"no connection to {servers} within {wait:g}s") from None
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return self._kv

    # -- the CAS loop --------------------------------------------------------------------------

    async def _update(
        self, key: str, change: Callable[[_Entry], tuple[bool, T]], give_up: float | None
    ) -> T:
        """Read the entry of ``key``, apply ``change`` (which returns whether to write and the
        answer) and write it back if the revision did not move; retry on conflicts. All of it
        by ``give_up`` (monotonic seconds; default: ``timeout`` from now).

        In-process, calls on one key take turns (so a process's tasks and threads do not fight
        each other's CAS), and the entry this process last wrote is remembered: a write based on
        it needs no read, and a conflict proves it stale. An answer that writes nothing is always
        given from a fresh read.
        """
        if give_up is None:
            give_up = _clock() + self.timeout
        name = kv_key(key)
        try:
            async with asyncio.timeout(give_up - _clock()):
                kv = await self._bucket()
                locks = self._locks
                slot = locks.get(name)
                if slot is None:
                    slot = locks[name] = [asyncio.Lock(), 0]
                slot[1] += 1
                try:
                    async with slot[0]:
                        return await self._cas(kv, name, key, change)
                finally:
                    slot[1] -= 1
                    if not slot[1] and locks.get(name) is slot:
                        del locks[name]
        except StoreUnavailable:
            raise
        except TimeoutError:
            self._cache.pop(name, None)  # a write may or may not have happened
            raise self._no_answer(f"no answer within {self.timeout:g}s") from None
        except _UNAVAILABLE as exc:
            self._cache.pop(name, None)
            raise _unavailable(exc) from exc

    async def _cas(
        self, kv: Any, name: str, key: str, change: Callable[[_Entry], tuple[bool, T]]
    ) -> T:
        cache = self._cache
        cached = cache.get(name)
        for attempt in range(self.max_retries):
            if cached is not None:
                entry = _Entry(cached[1], cached[0])
            else:
                try:
                    got = await kv.get(name)
                    entry = _Entry(got.value, got.revision or 0)
                except _MISSING:
                    entry = _Entry(None, 0)
            write, answer = change(entry)
            if not write:
                if cached is not None:
                    cached = None  # answer from a fresh read
                    continue
                return answer
            data = entry.encode()
            try:
                revision = await _swap(kv, name, data, entry.revision)
            except _CONFLICT:
                cache.pop(name, None)
                if cached is None:
                    await asyncio.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.02)))
                cached = None
                continue
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[name] = (revision, data)
            return answer
        raise StoreUnavailable(
            f"nats: no consistent update of {key!r} after {self.max_retries} attempts (contention)"
        )

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self._decide(key, rule, cost, now, True)

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return await self._decide(key, rule, cost, now, False)

    async def _decide(
        self,
        key: str,
        rule: Rule,
        cost: float,
        now: float,
        write: bool,
        give_up: float | None = None,
    ) -> Decision:
        algorithm, limits, parts = rule.algorithm, rule.limits, rule.parts

        def change(entry: _Entry) -> tuple[bool, Decision]:
            states = [entry.state(part, now) for part in parts]
            news, decision = evaluate(algorithm, limits, states, now, cost)
            if news is None or not write or news == states:
                return False, decision
            for part, limit, new, each in zip(parts, limits, news, decision.per_limit, strict=True):
                if new is None:
                    entry.parts.pop(part, None)
                else:  # kept until replenished: longer than the horizon for a state in debt
                    entry.parts[part] = [new, now + max(algorithm.horizon(limit), each.reset_after)]
            entry.now = now
            return True, decision

        return await self._update(key, change, give_up)

    # -- several checks at once (chains, reservations, priority classes) -------------------------

    async def apply_checks(
        self,
        checks: Sequence[Check],
        now: float,
        write: bool = True,
        give_up: float | None = None,
    ) -> Applied:
        """Several checks, all-or-nothing, in one multi-entry CAS loop (see `_cas_many`)."""
        if give_up is None:
            give_up = _clock() + self.timeout
        names = {check.key: kv_key(check.key) for check in checks}
        order = sorted(set(names.values()))
        try:
            async with asyncio.timeout(give_up - _clock()):
                kv = await self._bucket()
                async with AsyncExitStack() as stack:
                    for name in order:  # in-process turns, taken in one order: no deadlock
                        await stack.enter_async_context(self._turn(name))
                    if len(order) == 1:
                        key = checks[0].key
                        return await self._cas(kv, order[0], key, _change_of(checks, now, write))
                    if write and not any(check.mode == HIT for check in checks):
                        return await self._settle_each(kv, checks, names, now)
                    return await self._cas_many(kv, checks, names, order, now, write)
        except StoreUnavailable:
            raise
        except TimeoutError:
            for name in order:  # a write may or may not have happened
                self._cache.pop(name, None)
            raise self._no_answer(f"no answer within {self.timeout:g}s") from None
        except _UNAVAILABLE as exc:
            for name in order:
                self._cache.pop(name, None)
            raise _unavailable(exc) from exc

    @contextlib.asynccontextmanager
    async def _turn(self, name: str) -> AsyncIterator[None]:
        """This process's turn on one entry (as `_update` takes it)."""
        locks = self._locks
        slot = locks.get(name)
        if slot is None:
            slot = locks[name] = [asyncio.Lock(), 0]
        slot[1] += 1
        try:
            async with slot[0]:
                yield
        finally:
            slot[1] -= 1
            if not slot[1] and locks.get(name) is slot:
                del locks[name]

    async def _read(self, kv: Any, name: str) -> tuple[_Entry, bytes | None]:
        try:
            got = await kv.get(name)
        except _MISSING:
            return _Entry(None, 0), None
        return _Entry(got.value, got.revision or 0), got.value

    async def _settle_each(
        self, kv: Any, checks: Sequence[Check], names: dict[str, str], now: float
    ) -> Applied:
        """Unconditional checks only (a reservation's settlement): none can be denied, so each
        entry is updated on its own, in its own CAS loop, exactly once."""
        decisions: dict[int, Decision] = {}
        for key, name in sorted(names.items(), key=lambda item: item[1]):
            mine = [i for i, check in enumerate(checks) if check.key == key]
            applied = await self._cas(
                kv, name, key, _change_of([checks[i] for i in mine], now, True)
            )
            decisions.update(zip(mine, applied.decisions, strict=True))
        return Applied([decisions[i] for i in range(len(checks))], now)

    async def _cas_many(
        self,
        kv: Any,
        checks: Sequence[Check],
        names: dict[str, str],
        order: list[str],
        now: float,
        write: bool,
    ) -> Applied:
        """Read every entry, decide, then write each changed entry with a compare-and-swap, in
        ``order``. A conflict on one entry after others were written rolls those back (a CAS
        back to what they held; if someone wrote meanwhile, an inverse update: a refund of what
        this request charged) and starts again from fresh reads. While a request's entries are
        being written, another caller may see part of its charge and be denied: a transient
        under-admission, never an over-admission (every admitted request's writes all landed).
        """
        cache = self._cache
        for attempt in range(self.max_retries):
            entries: dict[str, _Entry] = {}
            raws: dict[str, bytes | None] = {}
            cached = attempt == 0 and all(name in cache for name in order)
            for name in order:
                if cached:
                    revision, data = cache[name]
                    entries[name], raws[name] = _Entry(data, revision), data
                else:
                    entries[name], raws[name] = await self._read(kv, name)
            states: dict[Slot, State] = {
                (c.key, part): entries[names[c.key]].state(part, now)
                for c in checks
                for part in c.rule.parts
            }
            writes, decisions, holds = evaluate_checks(checks, states, now)
            if writes is None or not write or not writes:
                if cached:
                    continue  # answer from fresh reads
                return Applied(decisions, now)
            touched = _store_writes(checks, names, entries, writes, holds, now)
            written: list[tuple[str, int, bytes | None]] = []
            conflict = False
            for name in order:
                if name not in touched:
                    continue
                entry = entries[name]
                data = entry.encode()
                try:
                    revision = await _swap(kv, name, data, entry.revision)
                except _CONFLICT:
                    cache.pop(name, None)
                    conflict = True
                    break
                written.append((name, revision, raws[name]))
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[name] = (revision, data)
            if not conflict:
                return Applied(decisions, now)
            for name, revision, raw in written:
                await self._roll_back(kv, name, revision, raw, checks, names, now)
            await asyncio.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.02)))
        raise StoreUnavailable(
            f"nats: no consistent update of {sorted(names)!r} after {self.max_retries} attempts "
            "(contention)"
        )

    async def _roll_back(
        self,
        kv: Any,
        name: str,
        revision: int,
        raw: bytes | None,
        checks: Sequence[Check],
        names: dict[str, str],
        now: float,
    ) -> None:
        """Undo this request's write of one entry: put back what it held if nobody wrote since,
        else apply the inverse of this request's checks on that entry (refund what was charged)."""
        self._cache.pop(name, None)
        try:
            await kv.update(name, raw or _EMPTY, last=revision)
            return
        except _CONFLICT:
            pass
        inverse = [
            Check(c.key, c.rule, c.cost, CHARGE if c.mode == REFUND else REFUND, at=now)
            for c in checks
            if names[c.key] == name and c.cost
        ]
        key = next(c.key for c in checks if names[c.key] == name)
        await self._cas(kv, name, key, _change_of(inverse, now, True))

    async def reset(self, key: str, rule: Rule, give_up: float | None = None) -> None:
        def change(entry: _Entry) -> tuple[bool, None]:
            if not entry.revision:
                return False, None
            for part in rule.parts:
                entry.parts.pop(part, None)
            entry.leases = None
            return True, None

        await self._update(key, change, give_up)

    async def acquire_lease(
        self,
        key: str,
        lease_id: str,
        limit: int,
        ttl: float,
        now: float,
        give_up: float | None = None,
    ) -> float:
        def change(entry: _Entry) -> tuple[bool, float]:
            new, wait = acquire_lease(entry.leases, now, lease_id, limit, ttl)
            if wait:
                return False, wait
            entry.leases = new
            entry.now = now
            return True, 0.0

        return await self._update(key, change, give_up)

    async def release_lease(
        self, key: str, lease_id: str, now: float, give_up: float | None = None
    ) -> None:
        def change(entry: _Entry) -> tuple[bool, None]:
            if not entry.leases:
                return False, None
            entry.leases = release_lease(entry.leases, now, lease_id)
            entry.now = now
            return True, None

        await self._update(key, change, give_up)

    async def ping(self, give_up: float | None = None) -> None:
        """Check the server answers (a JetStream request on the bucket)."""
        if give_up is None:
            give_up = _clock() + self.timeout
        try:
            async with asyncio.timeout(give_up - _clock()):
                kv = await self._bucket()
                await kv.status()
        except StoreUnavailable:
            raise
        except TimeoutError:
            raise self._no_answer(f"no answer within {self.timeout:g}s") from None
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def get_raw(self, key: str) -> bytes | None:
        """The stored JSON of ``key`` (a plain KV get: for inspection and benchmarks)."""
        kv = await self._bucket()
        try:
            return (await kv.get(kv_key(key))).value  # type: ignore[no-any-return]
        except _MISSING:
            return None
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        self._closed = True
        if self._loop is not asyncio.get_running_loop():  # the connection is another loop's
            self._nc = self._kv = self._connecting = None
        task, self._connecting = self._connecting, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        nc, self._nc, self._kv = self._nc, None, None
        self._cache.clear()
        if nc is not None and self._owns_nc:
            with contextlib.suppress(*_UNAVAILABLE):
                await nc.close()


class NatsStore:
    """The synchronous face of :class:`AsyncNatsStore`: the same store, driven on a private event
    loop in a daemon thread. Thread-safe; every thread shares one NATS connection."""

    def __init__(self, *args: Any, **options: Any) -> None:
        if options.get("nc") is not None:
            raise ConfigError("nc= belongs to an event loop: pass it to AsyncNatsStore instead")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ratekeeper-nats", daemon=True
        )
        self._thread.start()
        self.aio = AsyncNatsStore(*args, **options)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsStore:
        servers, options = _split_url(url, options)
        return cls(servers, **options)

    def _call(self, coro: Callable[[float], Coroutine[Any, Any, T]]) -> T:
        """Run ``coro(give_up)`` on the store's loop; the deadline counts from now, so time spent
        waiting for the loop thread counts too."""
        if self._closed:
            raise StoreUnavailable("nats store is closed")
        give_up = _clock() + self.aio.timeout
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro(give_up), self._loop)
        try:
            return future.result(max(give_up - _clock(), 0.0) + _LOOP_SLACK)
        except TimeoutError:
            future.cancel()
            raise StoreUnavailable(
                f"nats unavailable: no answer within {self.aio.timeout:g}s"
            ) from None

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self._call(functools.partial(self.aio._decide, key, rule, cost, now, True))

    def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        return self._call(functools.partial(self.aio._decide, key, rule, cost, now, False))

    def apply_checks(self, checks: Sequence[Check], now: float, write: bool = True) -> Applied:
        return self._call(functools.partial(self.aio.apply_checks, checks, now, write))

    def reset(self, key: str, rule: Rule) -> None:
        self._call(functools.partial(self.aio.reset, key, rule))

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        return self._call(functools.partial(self.aio.acquire_lease, key, lease_id, limit, ttl, now))

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        self._call(functools.partial(self.aio.release_lease, key, lease_id, now))

    def ping(self) -> None:
        self._call(self.aio.ping)

    def get_raw(self, key: str) -> bytes | None:
        return self._call(lambda _: self.aio.get_raw(key))

    def close(self) -> None:
        if self._closed:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.aio.close(), self._loop).result(
                self.aio.timeout + _LOOP_SLACK
            )
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()


async def _until_shutdown(
    ref: weakref.ref[AsyncNatsStore], loop: asyncio.AbstractEventLoop
) -> AsyncIterator[None]:
    """An async generator that the loop finalizes when it shuts down (``asyncio.run`` and
    ``asyncio.Runner`` do, before closing it): the moment to close the connection it opened."""
    try:
        yield
    finally:
        store = ref()
        if store is not None and store._loop is loop:
            await store._leave_loop(loop, store._nc)


_EMPTY = b'{"s":{}}'  # an entry holding no state (what a rolled-back new entry becomes)


def _change_of(
    checks: Sequence[Check], now: float, write: bool
) -> Callable[[_Entry], tuple[bool, Applied]]:
    """The CAS change of checks that all live in one entry."""

    def change(entry: _Entry) -> tuple[bool, Applied]:
        states = {(c.key, part): entry.state(part, now) for c in checks for part in c.rule.parts}
        writes, decisions, holds = evaluate_checks(checks, states, now)
        if writes is None or not write or not writes:
            return False, Applied(decisions, now)
        name = kv_key(checks[0].key)
        _store_writes(checks, {c.key: name for c in checks}, {name: entry}, writes, holds, now)
        return True, Applied(decisions, now)

    return change


def _store_writes(
    checks: Sequence[Check],
    names: dict[str, str],
    entries: dict[str, _Entry],
    writes: dict[Slot, State],
    holds: dict[Slot, float],
    now: float,
) -> set[str]:
    """Put ``writes`` into their entries (each state kept until it is replenished, a debt
    included); returns the names of the entries changed."""
    horizons: dict[Slot, float] = {}
    for c in checks:
        for part, limit in zip(c.rule.parts, c.rule.limits, strict=True):
            slot = (c.key, part)
            horizons[slot] = max(horizons.get(slot, 0.0), c.rule.algorithm.horizon(limit))
    touched = set()
    for (key, part), state in writes.items():
        name = names[key]
        entry = entries[name]
        if state is None:
            entry.parts.pop(part, None)
        else:
            entry.parts[part] = [state, now + max(horizons[(key, part)], holds[(key, part)])]
        entry.now = now
        touched.add(name)
    return touched


async def _quiet() -> None:
    """nats-py logs connection events unless given callbacks; the store reports by raising."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's exception as seen (its waiters may have given up)."""
    if not task.cancelled():
        task.exception()


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"nats unavailable: {_describe(exc)}")
