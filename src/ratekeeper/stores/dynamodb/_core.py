"""Everything of the DynamoDB stores that is not I/O: the URL, the item layout, and each operation
written once as a generator of steps (:class:`Call` a DynamoDB request, :class:`Pause` a backoff)
that :func:`ratekeeper._drive.drive` runs with botocore and :func:`~ratekeeper._drive.drive_async`
with aiobotocore. See the package docstring for the model and its guarantees.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import secrets
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from ratekeeper.algorithms import State, evaluate
from ratekeeper.algorithms.concurrency import acquire_lease, release_lease
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.base import Rule

T = TypeVar("T")

# The table: one item per user key.
KEY = "pk"  # partition key (S): "k:" + the user key, or "h:" + its sha256 when too long
VERSION = "v"  # (S) a random token, new at every write: the compare-and-swap condition
DATA = "d"  # (S) JSON: {"s": {part: [state, expires_at]}, "l": leases}
EXPIRES = "exp"  # (N) the TTL attribute: epoch seconds after which the item is useless
KEY_SCHEMA = [{"AttributeName": KEY, "KeyType": "HASH"}]
ATTRIBUTES = [{"AttributeName": KEY, "AttributeType": "S"}]

TTL_GRACE = 60.0  # seconds an item outlives its last state's replenishment (clock skew margin)
MAX_PLAIN_KEY = 1024  # bytes of UTF-8 kept as they are in the partition key (DynamoDB: 2048)
CACHE_SIZE = 10_000  # items this process last wrote, remembered to skip a read
BACKOFF_BASE = 0.001  # seconds: the jittered pause after a conflict doubles from here...
BACKOFF_CAP = 0.02  # ...up to this
VERSION_BYTES = 8  # random bytes per version token (a counter could repeat after a TTL delete)
PING_KEY = "h:ratekeeper-ping"  # an item that never exists: a read of it checks table and rights

DEFAULT_TIMEOUT = 0.5  # seconds per operation: wait for the key's turn, connect, send, receive
DEFAULT_MAX_RETRIES = 64  # compare-and-swap attempts per operation
DEFAULT_POOL = 50  # HTTP connections per store (and sync worker threads)

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "endpoint_url": str,
    "timeout": float,
    "connect_timeout": float,
    "read_timeout": float,
    "max_retries": int,
    "max_pool_connections": int,
}
# Conditions and answers that mean "the store cannot answer now" (everything else too, but these
# are named in messages as what they are).
_CONFLICT = "ConditionalCheckFailedException"
_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)


@dataclass(frozen=True, slots=True)
class Call:
    """One DynamoDB request: the client method's name and its parameters."""

    op: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this many seconds (a backoff), within the operation's deadline."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Conflict:
    """The answer to a conditional write that failed: the item as the server had it."""

    item: dict[str, Any] | None


Step = Call | Pause
Plan = Generator[Step, Any, T]
# One call's change to an item: mutates the entry when it writes; returns (writes?, its answer).
Change = Callable[["Entry"], tuple[bool, Any]]


def combine(changes: list[Change]) -> Callable[[Entry], tuple[bool, list[Any]]]:
    """The changes of several calls on one key as one change (one conditional write for all of
    them, each seeing the item as the ones before it left it)."""

    def change(entry: Entry) -> tuple[bool, list[Any]]:
        write, answers = False, []
        for one in changes:
            wrote, answer = one(entry)
            write = write or wrote
            answers.append(answer)
        return write, answers

    return change


@dataclass(slots=True)
class Waiting:
    """A call waiting for its key's turn: its change, and where its answer (or a :class:`Lead`)
    will be put (an asyncio or a concurrent.futures future, as the driver's)."""

    change: Change
    future: Any


@dataclass(frozen=True, slots=True)
class Lead:
    """Put in a waiting call's future: run these calls (yours first) as one batch."""

    batch: list[Waiting]


class Turns:
    """Group commit per key. While one call (the leader) has its round trips in flight, the calls
    on the same key that arrive queue up; when it is done, the first of them leads all of them in
    one read-modify-write. A hot key then costs one round trip per batch, not one per call, and
    the calls of one process never fight each other's conditional writes."""

    __slots__ = ("queues",)

    def __init__(self) -> None:
        self.queues: dict[str, list[Waiting]] = {}  # key -> its queue, while a leader runs

    def join(self, key: str, waiting: Waiting) -> bool:
        """True when the caller leads now; else ``waiting`` is queued."""
        queue = self.queues.get(key)
        if queue is None:
            self.queues[key] = []
            return True
        queue.append(waiting)
        return False

    def next(self, key: str) -> list[Waiting]:
        """The calls queued behind the leader that just finished (a new leader is due when there
        are any; the key has no leader any more when there are none)."""
        queue = self.queues.pop(key, None) or []
        if queue:
            self.queues[key] = []
        return queue


def item_key(key: str) -> str:
    """The partition key value of a user key (see the module constants)."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: DynamoDB strings must be valid UTF-8
        size = MAX_PLAIN_KEY + 1
    if size <= MAX_PLAIN_KEY:
        return "k:" + key
    return "h:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def outcome(exc: BaseException) -> Conflict:
    """What a failed request means: a :class:`Conflict` for a failed condition, else raise
    `StoreUnavailable` (throttling, 5xx, a missing table, refused credentials, a timeout, a
    connection error: the store cannot answer now)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code == _CONFLICT:
            return Conflict(exc.response.get("Item"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        message = " ".join(str(error.get("Message", "")).split())
        kind = "throttled" if code in _THROTTLED else f"HTTP {status}"
        if code == "ResourceNotFoundException":
            message += " (create the table with `ratekeeper migrate dynamodb://REGION/TABLE`)"
        raise StoreUnavailable(f"dynamodb unavailable: {kind} {code}: {message}") from exc
    if isinstance(exc, BotoCoreError | OSError | TimeoutError):
        text = " ".join(str(exc).split())
        raise StoreUnavailable(f"dynamodb unavailable: {type(exc).__name__}: {text}") from exc
    raise exc


def late(timeout: float) -> StoreUnavailable:
    return StoreUnavailable(f"dynamodb unavailable: no answer within {timeout:g}s")


def _thaw(value: Any) -> State:
    """JSON lists back into the tuples the algorithms use."""
    if isinstance(value, list):
        return tuple(_thaw(item) for item in value)
    return value


class Entry:
    """One item, decoded: the limit states of a key and its leases."""

    __slots__ = ("leases", "now", "parts", "version")

    def __init__(self, item: dict[str, Any] | None) -> None:
        self.version: str | None = item[VERSION]["S"] if item else None
        doc = json.loads(item[DATA]["S"]) if item else {}
        self.parts: dict[str, list[Any]] = doc.get("s", {})
        self.leases: State = _thaw(doc.get("l")) or None
        self.now = -math.inf  # states that expired by then are dropped when writing

    def state(self, part: str, now: float) -> State:
        item = self.parts.get(part)
        if item is None or item[1] <= now:
            return None
        return _thaw(item[0])

    def write(self, table: str, pk: str) -> tuple[Call, dict[str, Any] | None]:
        """The conditional request that stores this entry (a delete when nothing is left), and
        the item it leaves (None: no item)."""
        now = self.now
        parts = {part: item for part, item in self.parts.items() if item[1] > now}
        leases = tuple(lease for lease in self.leases or () if lease[1] > now)
        if self.version is None:
            condition: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#k)",
                "ExpressionAttributeNames": {"#k": KEY},
            }
        else:
            condition = {
                "ConditionExpression": "#v = :v",
                "ExpressionAttributeNames": {"#v": VERSION},
                "ExpressionAttributeValues": {":v": {"S": self.version}},
            }
        condition["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        key = {KEY: {"S": pk}}
        if not parts and not leases:
            return Call("delete_item", {"TableName": table, "Key": key, **condition}), None
        doc: dict[str, Any] = {"s": parts}
        if leases:
            doc["l"] = leases
        ends = [item[1] for item in parts.values()] + [lease[1] for lease in leases]
        item = {
            **key,
            VERSION: {"S": secrets.token_hex(VERSION_BYTES)},
            DATA: {"S": json.dumps(doc, separators=(",", ":"))},
            EXPIRES: {"N": str(math.ceil(min(max(ends) + TTL_GRACE, 1e15)))},
        }
        return Call("put_item", {"TableName": table, "Item": item, **condition}), item


def get(table: str, pk: str) -> Call:
    return Call("get_item", {"TableName": table, "Key": {KEY: {"S": pk}}, "ConsistentRead": True})


def split_url(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """``dynamodb://REGION/TABLE?option=value...`` into constructor arguments (``options``, the
    caller's keyword arguments, win)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "dynamodb":
        raise ConfigError(f"not a DynamoDB URL: {url!r}")
    ours: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = _URL_OPTIONS.get(name)
        if kind is None:
            known = ", ".join(_URL_OPTIONS)
            raise ConfigError(f"unknown option {name!r} in DynamoDB URL {url!r} (known: {known})")
        try:
            ours[name] = kind(value)
        except ValueError:
            raise ConfigError(f"bad value for {name!r} in DynamoDB URL {url!r}") from None
    table = unquote(parts.path.lstrip("/"))
    if not parts.netloc or not table:
        raise ConfigError(f"DynamoDB URL {url!r} must be dynamodb://REGION/TABLE")
    return {"region": unquote(parts.netloc), **ours, **options, "table": table}


class Core:
    """The options and the operations of a DynamoDB store, as plans; the sync and async stores
    add a client and the two drivers."""

    def __init__(
        self,
        table: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_pool_connections: int = DEFAULT_POOL,
    ) -> None:
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
            raise ConfigError(f"table must be 3-255 letters, digits, _ . or -, got {table!r}")
        if not timeout > 0 or not max_retries >= 1 or not max_pool_connections >= 1:
            raise ConfigError("timeout must be > 0, max_retries and max_pool_connections >= 1")
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        self.table = table
        self.region = region
        self.endpoint_url = endpoint_url
        self.timeout = float(timeout)
        # A socket wait longer than the operation's deadline would only tie up a connection.
        self.connect_timeout = float(connect_timeout or timeout)
        self.read_timeout = float(read_timeout or timeout)
        self.max_retries = max_retries
        self.max_pool_connections = max_pool_connections
        self._cache: dict[str, dict[str, Any]] = {}  # pk -> the item this store last wrote

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``create_client("dynamodb", ...)`` but ``config``."""
        return {"region_name": self.region, "endpoint_url": self.endpoint_url}

    def config_options(self) -> dict[str, Any]:
        """Keyword arguments of botocore's ``Config`` (and aiobotocore's ``AioConfig``): short
        socket timeouts and no retries by botocore (its default policy alone takes seconds; the
        store retries conflicts itself, within its deadline)."""
        return {
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "max_pool_connections": self.max_pool_connections,
        }

    # -- the compare-and-swap loop -------------------------------------------------------------

    def plan_update(self, key: str, change: Callable[[Entry], tuple[bool, T]]) -> Plan[T]:
        """Read the item of ``key``, apply ``change`` (whether to write, and the answer), write it
        back on condition that its version did not move; on a conflict, start again from the item
        the failed write returned, after a jittered pause when that was already fresh.

        The item this store last wrote is remembered, so a write based on it needs no read (one
        round trip per decision in the steady state); an answer that writes nothing is always
        given from a fresh read (another process may have reset the key)."""
        pk = item_key(key)
        cache = self._cache
        item: dict[str, Any] | None = cache.get(pk)
        fresh = item is None
        if fresh:
            item = (yield get(self.table, pk)).get("Item")
        conflicts = 0
        try:
            while True:
                entry = Entry(item)
                write, answer = change(entry)
                if not write:
                    if not fresh:
                        item, fresh = (yield get(self.table, pk)).get("Item"), True
                        continue
                    return answer
                call, written = entry.write(self.table, pk)
                reply = yield call
                if isinstance(reply, Conflict):
                    cache.pop(pk, None)
                    conflicts += 1
                    if conflicts >= self.max_retries:
                        raise StoreUnavailable(
                            f"dynamodb: no consistent update of {key!r} after {conflicts} "
                            "conditional writes (contention)"
                        )
                    if fresh:
                        backoff = min(BACKOFF_BASE * 2**conflicts, BACKOFF_CAP)
                        yield Pause(random.uniform(0, backoff))
                    item, fresh = reply.item, True
                    continue
                if written is None:
                    cache.pop(pk, None)
                else:
                    if len(cache) >= CACHE_SIZE:
                        cache.clear()
                    cache[pk] = written
                return answer
        except BaseException:
            cache.pop(pk, None)  # a write may or may not have happened
            raise

    def change_decide(self, rule: Rule, cost: float, now: float, write: bool) -> Change:
        algorithm, limits, parts = rule.algorithm, rule.limits, rule.parts

        def change(entry: Entry) -> tuple[bool, Decision]:
            states = [entry.state(part, now) for part in parts]
            news, decision = evaluate(algorithm, limits, states, now, cost)
            if news is None or not write or news == states:
                return False, decision
            for part, limit, new in zip(parts, limits, news, strict=True):
                if new is None:
                    entry.parts.pop(part, None)
                else:
                    entry.parts[part] = [new, now + algorithm.horizon(limit)]
            entry.now = max(entry.now, now)
            return True, decision

        return change

    @staticmethod
    def change_reset(rule: Rule) -> Change:
        def change(entry: Entry) -> tuple[bool, None]:
            if entry.version is None:
                return False, None
            for part in rule.parts:
                entry.parts.pop(part, None)
            entry.leases = None
            return True, None

        return change

    @staticmethod
    def change_acquire(lease_id: str, limit: int, ttl: float, now: float) -> Change:
        def change(entry: Entry) -> tuple[bool, float]:
            new, wait = acquire_lease(entry.leases, now, lease_id, limit, ttl)
            if wait:
                return False, wait
            entry.leases = new
            entry.now = max(entry.now, now)
            return True, 0.0

        return change

    @staticmethod
    def change_release(lease_id: str, now: float) -> Change:
        def change(entry: Entry) -> tuple[bool, None]:
            if not entry.leases:
                return False, None
            entry.leases = release_lease(entry.leases, now, lease_id)
            entry.now = max(entry.now, now)
            return True, None

        return change

    def plan_ping(self) -> Plan[None]:
        """A plain read of an item that never exists: checks the endpoint, the credentials, the
        table and the right to read it."""
        yield Call("get_item", {"TableName": self.table, "Key": {KEY: {"S": PING_KEY}}})

    def plan_raw(self, key: str) -> Plan[dict[str, Any] | None]:
        """The stored item of ``key`` (for inspection and tests)."""
        reply = yield get(self.table, item_key(key))
        item: dict[str, Any] | None = reply.get("Item")
        return item


# -- the table --------------------------------------------------------------------------------


def create_table(table: str) -> Plan[list[str]]:
    """Create the table (on-demand billing) and turn on its TTL, each only when missing; return
    what was done (empty when nothing: running it again changes nothing). A table of the same
    name with another key schema raises `ConfigError`."""
    done: list[str] = []
    try:
        described = yield Call("describe_table", {"TableName": table})
    except StoreUnavailable as exc:
        cause = exc.__cause__
        if not (isinstance(cause, ClientError) and _code(cause) == "ResourceNotFoundException"):
            raise
        try:
            yield Call(
                "create_table",
                {
                    "TableName": table,
                    "KeySchema": KEY_SCHEMA,
                    "AttributeDefinitions": ATTRIBUTES,
                    "BillingMode": "PAY_PER_REQUEST",
                },
            )
            done.append(f"created table {table} (on-demand, partition key {KEY} S)")
        except StoreUnavailable as exc:  # created meanwhile by someone else: check it below
            cause = exc.__cause__
            if not (isinstance(cause, ClientError) and _code(cause) == "ResourceInUseException"):
                raise
        described = yield Call("describe_table", {"TableName": table})
    while described["Table"].get("TableStatus", "ACTIVE") != "ACTIVE":
        yield Pause(1.0)
        described = yield Call("describe_table", {"TableName": table})
    schema = described["Table"].get("KeySchema")
    if schema != KEY_SCHEMA:
        raise ConfigError(
            f"table {table} exists with key schema {schema}; ratekeeper needs {KEY_SCHEMA}"
        )
    ttl = yield Call("describe_time_to_live", {"TableName": table})
    status = ttl.get("TimeToLiveDescription", {})
    if status.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        if status.get("AttributeName") != EXPIRES:
            raise ConfigError(
                f"table {table} has TTL on {status.get('AttributeName')!r}; ratekeeper needs "
                f"{EXPIRES!r}"
            )
        return done
    yield Call(
        "update_time_to_live",
        {
            "TableName": table,
            "TimeToLiveSpecification": {"Enabled": True, "AttributeName": EXPIRES},
        },
    )
    done.append(f"enabled TTL on attribute {EXPIRES}")
    return done


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
