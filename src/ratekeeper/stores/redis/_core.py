"""Everything the sync and async Redis stores share that is not I/O: the Lua scripts, key
building, the script calls (arguments and their RESP encoding), reply parsing, the server's
clock, URL parsing and client construction.

The stores build a call here, send it through their wire (:mod:`._wire`) and parse the reply
here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.resources
import inspect
import math
import struct
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.exceptions as rex
from redis.crc import key_slot

from ratekeeper.algorithms.checks import CHARGE, HIT, REFUND, Check
from ratekeeper.decision import Decision, from_rows
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.limits import Limit
from ratekeeper.stores.base import LEASE_PART, Applied, Rule
from ratekeeper.stores.redis._wire import Call, Script, WireBase, bulk, evalsha_head, number

__all__ = [
    "CHECKS",
    "DEFAULTS",
    "NO_DEADLINE",
    "LEASE_ACQUIRE",
    "LEASE_RELEASE",
    "LIMIT_SCRIPTS",
    "Prepared",
    "RedisCore",
    "ServerClock",
    "TimeSource",
    "ChecksRequest",
    "build_client",
    "parse_decision",
]

TimeSource = Literal["server", "client"]

# Store options a URL-built store accepts besides the redis-py client options.
DEFAULTS: dict[str, Any] = {
    # seconds one operation may take in all (pool wait, connect, send, reply): the decision's
    # deadline, measured from when it started; also redis-py's per-socket-operation timeout
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,  # seconds to wait for a TCP/TLS connection
    "retries": 1,  # immediate retries of a command after a connection error (no backoff)
    # pool size (standalone: a blocking pool), calls in flight (asyncio Cluster): callers wait
    "max_connections": 64,
    "pool_timeout": 0.5,  # seconds a caller waits for a free pooled connection
}

# Keys live this much longer than the state needs (ms). With the caller's clock the server's TTL
# cannot know how fast that clock moves, so keys are kept generously.
_GRACE_SERVER_MS = 1000
_GRACE_CLIENT_MS = 600_000
# server time ('') and a cost of 1 or 0, encoded
_MIDDLES: dict[float, bytes] = {cost: bulk(b"") + bulk(b"%d" % cost) for cost in (0, 1)}
_LIMIT_ARGS = 4  # the limit scripts' ARGV: now, cost, the packed rule, the deadline
_MAX_PLAIN_KEY = 100  # longer user keys are hashed
_BASE_CACHE_SIZE = 4096


def _timeout(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _client_timeout(client: Any) -> float:
    """The deadline of a store given a client: the client's ``socket_timeout`` when it has one,
    else the default (a decision is bounded even when the client's sockets are not)."""
    pool = getattr(client, "connection_pool", None)
    value = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
    if value is None:
        nodes = getattr(client, "nodes_manager", None)  # a cluster client
        value = getattr(nodes, "connection_kwargs", {}).get("socket_timeout")
    return _timeout(value if value is not None else DEFAULTS["socket_timeout"])


def _is_async_client(client: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(client, "execute_command", None))


NO_DEADLINE = b""  # the deadline argument when the server's clock is not known yet


class ServerClock:
    """The server's clock (Redis ``TIME``) as seen from this process, so that a command can carry
    the moment its caller gives up, in the server's time: the scripts refuse to run after it.

    Without it, a command sent to a server that is frozen (SIGSTOP, a stalled VM) or cut off
    runs when the server resumes, after the caller already got a fallback answer: a hit charged
    twice, or a lease held by nobody. The offset between ``TIME`` and :func:`time.monotonic` is
    measured with one extra ``TIME`` round trip on first use and every :attr:`REFRESH` seconds;
    half that round trip bounds its error, which is taken off the deadline (the server refuses a
    little early rather than late). The remaining case: a command that ran in time but whose
    reply was lost or arrived late (the link died just then) was charged without its caller
    seeing it.
    """

    REFRESH = 60.0  # seconds between measurements of the offset

    def __init__(self) -> None:
        self._offset_us: float | None = None  # server microseconds minus monotonic microseconds
        self._error_us = 0.0
        self._measured_at = -math.inf
        self._measuring = threading.Lock()  # one caller (thread or task) measures at a time

    def claim(self, now: float) -> bool:
        """Whether the caller should measure now: the offset is due and nobody else measures
        (the others go on with the previous measurement); then :meth:`release` after."""
        return now - self._measured_at > self.REFRESH and self._measuring.acquire(False)

    def release(self) -> None:
        self._measuring.release()

    def record(self, sent: float, received: float, reply: Any) -> None:
        """One ``TIME`` reply (seconds, microseconds) received ``received`` (monotonic) after
        it was asked for at ``sent``."""
        if isinstance(reply, dict):  # a cluster answers per node: any node will do
            reply = next(iter(reply.values()))
        server_us = int(reply[0]) * 1_000_000 + int(reply[1])
        self._offset_us = server_us - (sent + received) * 500_000
        self._error_us = (received - sent) * 500_000
        self._measured_at = received

    def forget(self) -> None:
        """The server refused a command its caller still waited for: measure again."""
        self._measured_at = -math.inf

    def deadline(self, give_up: float) -> bytes:
        """The server-time deadline (integer microseconds) of a caller that gives up at
        ``give_up`` (monotonic seconds)."""
        if self._offset_us is None:
            return NO_DEADLINE
        return b"%d" % int(give_up * 1_000_000 + self._offset_us - self._error_us)


def _lua(name: str) -> str:
    return (importlib.resources.files(__package__) / "lua" / f"{name}.lua").read_text("utf-8")


def _build_scripts() -> tuple[dict[str, Script], Script, Script, Script]:
    prelude = _lua("prelude")
    guard = _lua("deadline")

    def script(name: str, body: str, deadline_arg: int) -> Script:
        """``body`` after the helpers, refusing to run after the caller's deadline (its
        ARGV[``deadline_arg``]): the guard reads the server's clock with the helpers'
        ``server_time()``, which the body's ``clock()`` reuses."""
        source = f"local DEADLINE = ARGV[{deadline_arg}]\n{prelude}\n{guard}\n{body}"
        return Script(name, source)

    driver = _lua("limits")
    gcra = _lua("gcra")
    bodies = {
        "token_bucket": _lua("token_bucket"),
        "fixed_window": _lua("floordiv") + _lua("fixed_window"),
        "sliding_window": _lua("floordiv") + _lua("sliding_window"),
        "sliding_log": _lua("sliding_log"),  # its own driver: it changes the log in place
        "gcra": "local SHAPING = false\n" + gcra,
        "leaky_bucket": "local SHAPING = true\n" + gcra,
    }
    # The deadline is the ARGV after the ones each script reads (limits.lua: now, cost, rule).
    limit_scripts = {
        name: script(name, f"{body}\n{'' if name == 'sliding_log' else driver}", 4)
        for name, body in bodies.items()
    }
    acquire = script("lease_acquire", _lua("lease_acquire"), 6)
    release = script("lease_release", _lua("lease_release"), 3)
    # apply_checks: every algorithm in one script, each apply/horizon in a block of its own
    # (the sliding log as a list: log_list.lua), their charge/refund, then step and the driver.
    algorithms = [
        "local ALGORITHMS = {}",
        f"local ALGORITHM_NAMES = {{{', '.join(repr(name) for name in ALGORITHM_NAMES)}}}",
        _lua("floordiv"),
    ]
    plain = {
        "token_bucket": _lua("token_bucket"),
        "fixed_window": _lua("fixed_window"),
        "sliding_window": _lua("sliding_window"),
        "gcra": "local SHAPING = false\n" + gcra,
        "leaky_bucket": "local SHAPING = true\n" + gcra,
    }
    for name, body in plain.items():
        algorithms.append(
            f"do\n{body}\nALGORITHMS.{name} = {{ apply = apply, horizon = horizon }}\nend"
        )
    algorithms += [_lua("settle"), _lua("log_list"), _lua("checks")]
    checks = script("checks", "\n".join(algorithms), 4)
    return limit_scripts, acquire, release, checks


# The checks script names an algorithm by its index (from 1) in this tuple.
ALGORITHM_NAMES = (
    "token_bucket",
    "leaky_bucket",
    "fixed_window",
    "sliding_window",
    "sliding_log",
    "gcra",
)
LIMIT_SCRIPTS, LEASE_ACQUIRE, LEASE_RELEASE, CHECKS = _build_scripts()
_ALGORITHM_INDEX = {name: i for i, name in enumerate(ALGORITHM_NAMES, 1)}
# The checks script's modes: decide only, decide and write, and describe (decide only; the items
# that pass are described without their cost, as after a denial).
PEEK, WRITE, DESCRIBE = 0, 1, 2
_CHECKS_ARGS = 4  # the checks script's ARGV: now, the packed head, the packed items, the deadline
_ITEM = struct.Struct("<ddddd")  # per item of the checks script: slot, cost, mode, keep, at
_CHECK_ROW = struct.Struct("<dddd")  # per state key: algorithm index, amount, per, capacity
_HEAD = struct.Struct("<dd")  # the checks script's mode and extra TTL


class Prepared:
    """What a store precomputes once per rule: the script, the key suffixes, the packed limits."""

    __slots__ = (
        "amount",
        "check_rows",
        "heads",
        "hit_packet_tail",
        "hit_tail",
        "limit",
        "limits",
        "nkeys",
        "peek_packet_tail",
        "peek_tail",
        "script",
        "suffixes",
    )

    def __init__(self, rule: Rule, grace_ms: int) -> None:
        name = rule.algorithm.name
        script = LIMIT_SCRIPTS.get(name)
        if script is None:
            raise ConfigError(
                f"the redis store has no script for algorithm {name!r}; "
                f"it runs {', '.join(sorted(LIMIT_SCRIPTS))}"
            )
        self.script = script
        self.limits: tuple[Limit, ...] = rule.limits
        self.limit = rule.limits[0]
        self.amount = self.limit.amount
        self.nkeys = len(rule.limits)
        self.suffixes = tuple(part.encode() for part in rule.parts)
        numbers: list[float] = [grace_ms]
        for limit in rule.limits:
            numbers += [limit.amount, limit.per, limit.capacity]
        layout = f"<{len(numbers) + 1}d"
        # the third ARGV of limits.lua: write flag, extra TTL, then amount, per, capacity each
        self.hit_tail = struct.pack(layout, 1, *numbers)
        self.peek_tail = struct.pack(layout, 0, *numbers)
        # The same call pre-encoded, for the wire's fast path: a head per user key
        # (EVALSHA sha nkeys key...), then now, cost, the tail and the deadline.
        self.heads: dict[str, bytes] = {}
        self.hit_packet_tail = bulk(self.hit_tail)
        self.peek_packet_tail = bulk(self.peek_tail)
        # the checks script's row per limit: algorithm index, amount, per, capacity
        index = _ALGORITHM_INDEX[name]
        self.check_rows = tuple(
            _CHECK_ROW.pack(index, limit.amount, limit.per, limit.capacity) for limit in rule.limits
        )


_floats = struct.Struct("<ddd").unpack
_check_row = struct.Struct("<ddddd").unpack_from  # a checks reply's item


class ChecksRequest(NamedTuple):
    """One run of the checks script: ``checks`` (on a Cluster, all in one hash slot), the mode
    (:data:`PEEK`, :data:`WRITE`, :data:`DESCRIBE`) and the clock argument (the caller's time, or
    ``b""`` for the server's)."""

    checks: Sequence[Check]
    mode: int
    clock: float | bytes


def _undoing(check: Check, at: float) -> Check:
    """The check that gives back what ``check``, applied at ``at``, took (or charges back what
    it gave back)."""
    if check.mode == REFUND:
        return Check(check.key, check.rule, check.cost, CHARGE)
    return Check(check.key, check.rule, check.cost, REFUND, at=at)


def parse_decision(prepared: Prepared, reply: Sequence[Any]) -> Decision:
    """The decision from a limit script's reply (per limit: allowed, remaining, and reset_after,
    retry_after, delay as packed doubles), as :func:`ratekeeper.decision.from_rows` builds it
    (inlined for the common single limit)."""
    if prepared.nkeys == 1:
        ok, remaining, floats = reply
        reset, retry, delay = _floats(floats)
        return Decision(ok == 1, prepared.amount, remaining, reset, retry, delay, prepared.limit)
    rows = [(reply[i], reply[i + 1], *_floats(reply[i + 2])) for i in range(0, len(reply), 3)]
    return from_rows(prepared.limits, rows)


class RedisCore:
    """The I/O-free half of both Redis stores.

    Key layout: ``<prefix>:{<tag>}:<algorithm>:<limit>`` per limit, and
    ``<prefix>:{<tag>}:concurrency`` for leases. ``<tag>`` is the user key itself when it is at
    most 100 characters, contains no ``{`` or ``}`` and does not start with ``#``; otherwise it is
    ``#`` followed by the hex BLAKE2b-128 of the key's UTF-8 bytes. So every key of one user key
    shares one Cluster hash slot, user content can never move the hash tag, keys of any length stay
    short, and distinct user keys give distinct Redis keys (collisions only with negligible
    probability, between hashed keys).
    """

    _aio: ClassVar[bool] = False
    _wire_type: ClassVar[type[WireBase]]  # the store's I/O: Wire or AsyncWire

    #: The algorithms this store can run (custom ones have no Lua port).
    algorithms: frozenset[str] = frozenset(LIMIT_SCRIPTS)

    def __init__(
        self,
        client: Any = None,
        *,
        prefix: str = "rk",
        time_source: TimeSource = "server",
        pipelining: bool = True,
    ) -> None:
        self._setup(prefix, time_source, pipelining)
        kind = "redis.asyncio" if self._aio else "synchronous redis"
        if client is None:
            raise ConfigError(
                f"{type(self).__name__} needs client=<a {kind} client>, or from_url()"
            )
        if _is_async_client(client) != self._aio:
            raise ConfigError(f"{type(self).__name__} needs a {kind} client, got {client!r}")
        self.timeout = _client_timeout(client)
        self._cluster = getattr(client, "nodes_manager", None) is not None
        self._open(client, None)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "rk",
        time_source: TimeSource = "server",
        pipelining: bool = True,
        **options: Any,
    ) -> Self:
        """A store with its own client and pool, created on first use. Options (defaults):
        ``socket_timeout`` (0.5 s), ``socket_connect_timeout`` (0.5 s), ``retries`` (1 immediate
        retry after a connection error), ``max_connections`` (64: standalone, callers wait for a
        free connection; asyncio Cluster, for one of 64 calls in flight), ``pool_timeout``
        (0.5 s), and any keyword redis-py's client accepts."""
        unknown = set(options) & {"client"}
        if unknown:
            raise ConfigError(f"from_url() does not take {', '.join(sorted(unknown))}")
        store = cls.__new__(cls)
        store._setup(prefix, time_source, pipelining)
        options = {**DEFAULTS, **options}
        store.timeout = _timeout(options["socket_timeout"])
        store._cluster = urlsplit(url).scheme.lower() == "redis+cluster"
        store._open(None, build_client(url, cls._aio, options), options["max_connections"])
        return store

    def _setup(self, prefix: str, time_source: TimeSource, pipelining: bool) -> None:
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigError(f"key prefix must be a str without braces, got {prefix!r}")
        if time_source not in ("server", "client"):
            raise ConfigError(f"time_source must be 'server' or 'client', got {time_source!r}")
        self.prefix = prefix
        #: Seconds a decision may take in all (``socket_timeout``): then it is StoreUnavailable.
        self.timeout = _timeout(DEFAULTS["socket_timeout"])
        self.server_clock = ServerClock()
        self.time_source: TimeSource = time_source
        self._client_time = time_source == "client"
        self._grace_ms = _GRACE_CLIENT_MS if self._client_time else _GRACE_SERVER_MS
        self._head = (prefix + ":{").encode() if prefix else b"{"
        self._rules: dict[tuple[str, ...], Prepared] = {}
        self._bases: dict[str, bytes] = {}
        self._pipelining = bool(pipelining)
        self._cluster = False  # a Cluster: checks in different hash slots go in separate scripts

    def _open(
        self, client: Any, factory: Callable[[], Any] | None, max_calls: int | None = None
    ) -> None:
        """The wire to the server: on ``client``, or on the clients ``factory`` builds;
        ``max_calls``: see `WireBase`."""
        self._wire = self._wire_type(
            client,
            factory,
            timeout=self.timeout,
            refused=self.server_clock.forget,
            pipelining=self._pipelining,
            max_calls=max_calls,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self.prefix!r} time_source={self.time_source!r}>"

    # -- keys

    def base_key(self, key: str) -> bytes:
        """``<prefix>:{<tag>}:`` for a user key (cached)."""
        base = self._bases.get(key)
        if base is None:
            raw = key.encode("utf-8", "surrogatepass")
            if len(key) > _MAX_PLAIN_KEY or b"{" in raw or b"}" in raw or key.startswith("#"):
                raw = b"#" + hashlib.blake2b(raw, digest_size=16).hexdigest().encode()
            base = self._head + raw + b"}:"
            if len(self._bases) >= _BASE_CACHE_SIZE:
                self._bases.clear()
            self._bases[key] = base
        return base

    def prepared(self, rule: Rule) -> Prepared:
        prepared = self._rules.get(rule.parts)
        if prepared is None:
            prepared = self._rules[rule.parts] = Prepared(rule, self._grace_ms)
        return prepared

    # -- commands: (script, arguments after the SHA)

    def limit_command(
        self, key: str, rule: Rule, cost: float, now: float, write: bool, deadline: bytes
    ) -> tuple[Prepared, tuple[Any, ...]]:
        """The script's arguments; ``deadline`` from :meth:`ServerClock.deadline`."""
        prepared = self._rules.get(rule.parts) or self.prepared(rule)
        base = self._bases.get(key) or self.base_key(key)
        clock = now if self._client_time else b""
        tail = prepared.hit_tail if write else prepared.peek_tail
        if prepared.nkeys == 1:
            return prepared, (1, base + prepared.suffixes[0], clock, cost, tail, deadline)
        keys = [base + suffix for suffix in prepared.suffixes]
        return prepared, (prepared.nkeys, *keys, clock, cost, tail, deadline)

    def limit_call(
        self, key: str, rule: Rule, cost: float, now: float, write: bool, deadline: bytes
    ) -> tuple[Prepared, Call]:
        """:meth:`limit_command` as a :class:`Call`, with its RESP encoding."""
        prepared, args = self.limit_command(key, rule, cost, now, write, deadline)
        head = prepared.heads.get(key)
        if head is None:
            head = evalsha_head(prepared.script, args[1 : 1 + prepared.nkeys], _LIMIT_ARGS)
            if len(prepared.heads) >= _BASE_CACHE_SIZE:
                prepared.heads.clear()
            prepared.heads[key] = head
        middle = _MIDDLES.get(cost) if not self._client_time else None
        if middle is None:
            clock = number(now) if self._client_time else b""
            middle = bulk(clock) + bulk(number(cost))
        tail = prepared.hit_packet_tail if write else prepared.peek_packet_tail
        return prepared, Call(prepared.script, args, head + middle + tail + bulk(deadline))

    def acquire_command(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float, deadline: bytes
    ) -> tuple[Any, ...]:
        clock = now if self._client_time else b""
        lease_key = self.base_key(key) + LEASE_PART.encode()
        return (1, lease_key, clock, lease_id, int(limit), float(ttl), self._grace_ms, deadline)

    def release_command(
        self, key: str, lease_id: str, now: float, deadline: bytes
    ) -> tuple[Any, ...]:
        clock = now if self._client_time else b""
        return (1, self.base_key(key) + LEASE_PART.encode(), clock, lease_id, deadline)

    # -- several checks at once (apply_checks)

    def checks_flow(
        self, checks: Sequence[Check], now: float, write: bool
    ) -> Generator[ChecksRequest, Any, Applied]:
        """``apply_checks`` as a generator of script runs (:class:`ChecksRequest`: the store
        sends each and sends its reply back in, or throws its `StoreUnavailable` in).

        One script applies every check all-or-nothing (standalone, Sentinel, and a Cluster when
        every key is in one hash slot). Across the hash slots of a Cluster, reserve then refund:
        each slot's checks in one script, in turn, at one instant (the first script's time); if a
        slot denies, the slots already charged get their units back (refunded at that instant:
        the exact inverse) and every other slot's checks are described without this request's
        cost. In between, another client sees those slots charged: it may be refused what it
        would otherwise get (never admitted more); a refund that fails leaves them charged
        (see the README's Policies section).
        """
        clock: float | bytes = now if self._client_time else b""
        if not checks:
            return Applied([], now)
        mode = WRITE if write else PEEK
        groups = self.checks_groups(checks)
        if len(groups) == 1:
            return self.parse_checks(checks, (yield ChecksRequest(checks, mode, clock)))
        decisions: dict[int, Decision] = {}
        at = now
        charged: list[tuple[list[Check], float]] = []  # the slots written, and when
        denied = -1
        for n, group in enumerate(groups):
            part = [checks[i] for i in group]
            try:
                reply = yield ChecksRequest(part, mode, clock)
            except StoreUnavailable:
                yield from self._undo(charged)
                raise
            applied = self.parse_checks(part, reply)
            at = clock = applied.now  # every slot decides at the first script's time
            for i, decision in zip(group, applied.decisions, strict=True):
                decisions[i] = decision
            if not all(decision.allowed for decision in applied.decisions):
                if denied < 0:
                    denied = n
                if mode == WRITE:
                    break
            elif mode == WRITE:
                charged.append((part, at))
        if denied >= 0:
            yield from self._undo(charged)
            for n, group in enumerate(groups):
                if n != denied:
                    part = [checks[i] for i in group]
                    described = self.parse_checks(part, (yield ChecksRequest(part, DESCRIBE, at)))
                    for i, decision in zip(group, described.decisions, strict=True):
                        decisions[i] = decision
        return Applied([decisions[i] for i in range(len(checks))], at)

    def _undo(
        self, charged: list[tuple[list[Check], float]]
    ) -> Generator[ChecksRequest, Any, None]:
        """Give back what the slots ``charged`` took (best effort: a slot whose refund fails stays
        charged, which only ever refuses more)."""
        for part, at in charged:
            with contextlib.suppress(StoreUnavailable):
                yield ChecksRequest([_undoing(check, at) for check in part], WRITE, at)

    def checks_groups(self, checks: Sequence[Check]) -> list[list[int]]:
        """The checks (their indexes) that one script may apply together: all of them, or on a
        Cluster those of each hash slot; the slots with a conditional check first (the others
        cannot deny, so they never need undoing)."""
        if not self._cluster:
            return [list(range(len(checks)))]
        groups: dict[int, list[int]] = {}
        for i, check in enumerate(checks):
            slot = key_slot(self._bases.get(check.key) or self.base_key(check.key))
            groups.setdefault(slot, []).append(i)
        return sorted(groups.values(), key=lambda g: all(checks[i].mode != HIT for i in g))

    def checks_call(self, request: ChecksRequest, deadline: bytes) -> Call:
        """The checks script's call: the distinct state keys, per key its algorithm and limit,
        per (check, limit) item its key's index, cost, mode, kept units and charge time."""
        keys: dict[bytes, int] = {}
        head = [_HEAD.pack(request.mode, self._grace_ms)]
        items: list[bytes] = []
        item = _ITEM.pack
        for check in request.checks:
            prepared = self._rules.get(check.rule.parts) or self.prepared(check.rule)
            base = self._bases.get(check.key) or self.base_key(check.key)
            keeps = check.keeps() if check.share < 1.0 else None
            for i, suffix in enumerate(prepared.suffixes):
                state_key = base + suffix
                slot = keys.get(state_key)
                if slot is None:
                    slot = keys[state_key] = len(keys) + 1
                    head.append(prepared.check_rows[i])
                keep = keeps[i] if keeps is not None else 0.0
                items.append(item(slot, check.cost, check.mode, keep, check.at))
        clock = request.clock
        argv = (
            clock if isinstance(clock, bytes) else number(clock),
            b"".join(head),
            b"".join(items),
            deadline,
        )
        packet = evalsha_head(CHECKS, list(keys), _CHECKS_ARGS) + b"".join(map(bulk, argv))
        return Call(CHECKS, (len(keys), *keys, *argv), packet)

    @staticmethod
    def parse_checks(checks: Sequence[Check], reply: bytes) -> Applied:
        """The decisions of a checks script's reply (5 doubles per item) and its time."""
        decisions = []
        at = 0
        for check in checks:
            limits = check.rule.limits
            if len(limits) == 1:  # from_rows inlined for the common single limit
                limit = limits[0]
                ok, remaining, reset, retry, delay = _check_row(reply, at)
                decisions.append(
                    Decision(ok == 1, limit.amount, int(remaining), reset, retry, delay, limit)
                )
            else:
                rows = [_check_row(reply, at + 40 * i) for i in range(len(limits))]
                decisions.append(from_rows(limits, rows))
            at += 40 * len(limits)
        return Applied(decisions, struct.unpack_from("<d", reply, at)[0])

    def reset_keys(self, key: str, rule: Rule) -> list[bytes]:
        base = self.base_key(key)
        return [base + suffix for suffix in self.prepared(rule).suffixes] + [
            base + LEASE_PART.encode()
        ]


# --------------------------------------------------------------------------- clients from URLs


def _hosts(netloc: str, url: str) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """``user:password@host:port,host:port`` -> (username, password, [(host, port)])."""
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, sep, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    hosts = []
    for item in netloc.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, ""
        host = host.strip("[]")
        try:
            hosts.append((host or "127.0.0.1", int(port) if port else 0))
        except ValueError:
            raise ConfigError(f"bad port {port!r} in redis URL {url!r}") from None
    if not hosts:
        raise ConfigError(f"no host in redis URL {url!r}")
    return username, password, hosts


def _query_options(query: str, url: str) -> dict[str, Any]:
    """The few query parameters accepted on cluster and sentinel URLs."""
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query):
        if name in ("socket_timeout", "socket_connect_timeout"):
            try:
                options[name] = float(value)
            except ValueError:
                raise ConfigError(f"bad {name} {value!r} in {url!r}") from None
        elif name == "ssl":
            options["ssl"] = value.lower() in ("1", "true", "yes", "on")
        else:
            raise ConfigError(f"unknown query parameter {name!r} in redis URL {url!r}")
    return options


def build_client(url: str, aio: bool, options: dict[str, Any]) -> Callable[[], Any]:
    """A factory of redis-py clients (``redis.asyncio`` when ``aio``) for any supported URL.

    ``options`` are the store options of :data:`DEFAULTS` (already filled in) plus any keyword
    that the redis-py client or connection accepts. The URL is checked now; the client is built
    by calling the factory, on first use (the synchronous Cluster client connects when built).
    """
    options = dict(options)
    retries = options.pop("retries")
    max_connections = options.pop("max_connections")
    pool_timeout = options.pop("pool_timeout")
    # Looked up dynamically: the names are the same in redis and redis.asyncio, the types not.
    root = "redis.asyncio" if aio else "redis"
    mod: Any = importlib.import_module(root)
    Retry: Any = importlib.import_module(f"{root}.retry").Retry
    NoBackoff: Any = importlib.import_module("redis.backoff").NoBackoff

    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
    retry = Retry(NoBackoff(), retries, supported_errors=(rex.ConnectionError,))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        database = parts.path.strip("/") if scheme != "unix" else ""
        if database and not database.isdigit():
            raise ConfigError(f"bad database {database!r} in redis URL {url!r}")

        def standalone() -> Any:
            # A pool per client: an asyncio client belongs to one event loop (see the driver).
            pool = mod.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=pool_timeout, retry=retry, **options
            )
            return mod.Redis(connection_pool=pool)

        try:
            standalone()  # check the URL now (a pool connects nothing until used)
        except ValueError as exc:
            raise ConfigError(f"bad redis URL {url!r}: {exc}") from exc
        return standalone
    if scheme == "redis+cluster":
        username, password, hosts = _hosts(parts.netloc, url)
        path = parts.path.strip("/")
        if path not in ("", "0"):
            raise ConfigError(f"redis cluster has only database 0, got {path!r} in {url!r}")
        options.update(_query_options(parts.query, url))
        cluster: Any = importlib.import_module(f"{root}.cluster")
        nodes = [cluster.ClusterNode(host, port or 6379) for host, port in hosts]
        kwargs = dict(username=username, password=password, retry=retry, **options)
        return lambda: cluster.RedisCluster(startup_nodes=nodes, **kwargs)
    if scheme == "redis+sentinel":
        username, password, hosts = _hosts(parts.netloc, url)
        names = [p for p in parts.path.split("/") if p]
        if not names or len(names) > 2:
            raise ConfigError(
                f"a sentinel URL is redis+sentinel://host:port[,host:port]/service_name[/db], "
                f"got {url!r}"
            )
        service = unquote(names[0])
        try:
            db = int(names[1]) if len(names) == 2 else 0
        except ValueError:
            raise ConfigError(f"bad database {names[1]!r} in {url!r}") from None
        options.update(_query_options(parts.query, url))
        sentinel_kwargs = options.pop("sentinel_kwargs", None) or {
            "socket_timeout": options.get("socket_timeout"),
            "socket_connect_timeout": options.get("socket_connect_timeout"),
        }
        sentinel_class: Any = importlib.import_module(f"{root}.sentinel").Sentinel

        def master() -> Any:
            sentinel = sentinel_class(  # per client, like its connections (one event loop)
                [(host, port or 26379) for host, port in hosts],
                sentinel_kwargs=sentinel_kwargs,
                username=username,
                password=password,
                retry=retry,
                **options,
            )
            # Sentinel pools do not block when full: keep them unbounded (redis-py 8 caps at 100).
            client = sentinel.master_for(service, db=db, max_connections=2**31)
            client._ratekeeper_also_close = sentinel.sentinels
            return client

        return master
    raise ConfigError(f"not a redis URL: {url!r}")
