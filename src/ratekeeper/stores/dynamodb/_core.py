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
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from ratekeeper.algorithms import State, evaluate
from ratekeeper.algorithms.checks import Check, Slot, evaluate_checks
from ratekeeper.algorithms.concurrency import acquire_lease, release_lease
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.base import Applied, Rule

T = TypeVar("T")
L = TypeVar("L")

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
MAX_ITEMS = 100  # items per TransactWriteItems and keys per BatchGetItem (DynamoDB's limits)

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
_CANCELLED = "TransactionCanceledException"
# A transaction's cancellation reasons that mean "another writer came first": retried. Any other
# (throttling, validation, capacity) is StoreUnavailable.
_FAILED, _BUSY, _FINE = "ConditionalCheckFailed", "TransactionConflict", "None"
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


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The answer to a transaction that lost a race: one reason per item, in request order
    (``Code`` ``"None"``: its condition held; ``"ConditionalCheckFailed"``: it did not, ``Item``
    is then the item as the server had it, absent when there was none)."""

    reasons: tuple[dict[str, Any], ...]


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


class Locks(Generic[L]):
    """This process's turns on items for transactions (a lock per partition key, made on first
    use, forgotten when no caller holds or waits for it). Taken in key order (`items_of`), so
    that the transactions of one process neither fight each other's conditions nor deadlock."""

    __slots__ = ("factory", "slots")

    def __init__(self, factory: Callable[[], L]) -> None:
        self.factory = factory
        self.slots: dict[str, list[Any]] = {}  # pk -> [lock, callers holding or waiting]

    def take(self, pk: str) -> L:
        slot = self.slots.get(pk)
        if slot is None:
            slot = self.slots[pk] = [self.factory(), 0]
        slot[1] += 1
        lock: L = slot[0]
        return lock

    def drop(self, pk: str) -> None:
        slot = self.slots[pk]
        slot[1] -= 1
        if not slot[1]:
            del self.slots[pk]


def item_key(key: str) -> str:
    """The partition key value of a user key (see the module constants)."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: DynamoDB strings must be valid UTF-8
        size = MAX_PLAIN_KEY + 1
    if size <= MAX_PLAIN_KEY:
        return "k:" + key
    return "h:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def outcome(exc: BaseException) -> Conflict | Cancelled:
    """What a failed request means: a :class:`Conflict` for a failed condition, a
    :class:`Cancelled` for a transaction that lost a race, else raise `StoreUnavailable`
    (throttling, 5xx, a missing table, refused credentials, a timeout, a connection error, a
    transaction cancelled for any other reason: the store cannot answer now)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code == _CONFLICT:
            return Conflict(exc.response.get("Item"))
        reasons = exc.response.get("CancellationReasons") or ()
        codes = {reason.get("Code", _FINE) for reason in reasons}
        if code == _CANCELLED and reasons and codes <= {_FAILED, _BUSY, _FINE} and codes != {_FINE}:
            return Cancelled(tuple(reasons))
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
        condition = unchanged(self.version)
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


def unchanged(version: str | None) -> dict[str, Any]:
    """The condition that an item is still at ``version`` (None: still absent), returning the
    item as it is when it is not."""
    if version is None:
        return {
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": KEY},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    return {
        "ConditionExpression": "#v = :v",
        "ExpressionAttributeNames": {"#v": VERSION},
        "ExpressionAttributeValues": {":v": {"S": version}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def get(table: str, pk: str) -> Call:
    return Call("get_item", {"TableName": table, "Key": {KEY: {"S": pk}}, "ConsistentRead": True})


def in_transaction(call: Call) -> dict[str, Any]:
    """A conditional ``put_item``/``delete_item`` as an element of ``TransactItems``."""
    return {"Put" if call.op == "put_item" else "Delete": call.params}


def condition_check(table: str, pk: str, version: str | None) -> dict[str, Any]:
    """An element of ``TransactItems`` that only checks that an item is still at ``version``."""
    return {"ConditionCheck": {"TableName": table, "Key": {KEY: {"S": pk}}, **unchanged(version)}}


def put_states(
    checks: Sequence[Check],
    pks: dict[str, str],
    entries: dict[str, Entry],
    writes: dict[Slot, State],
    holds: dict[Slot, float],
    now: float,
) -> set[str]:
    """Put the states `evaluate_checks` wrote into their entries, each kept until it is
    replenished (a state in debt longer than its algorithm's horizon); returns the partition keys
    changed."""
    horizons: dict[Slot, float] = {}
    for check in checks:
        for part, limit in zip(check.rule.parts, check.rule.limits, strict=True):
            slot = (check.key, part)
            horizon = check.rule.algorithm.horizon(limit)
            horizons[slot] = max(horizons.get(slot, 0.0), horizon)
    touched = set()
    for (key, part), state in writes.items():
        pk = pks[key]
        entry = entries[pk]
        if state is None:
            entry.parts.pop(part, None)
        else:
            entry.parts[part] = [state, now + max(horizons[(key, part)], holds[(key, part)])]
        entry.now = max(entry.now, now)
        touched.add(pk)
    return touched


def one_key(checks: Sequence[Check]) -> str | None:
    """The user key of checks that all fall on one item (None: several items, or none)."""
    keys = {check.key for check in checks}
    return keys.pop() if len(keys) == 1 else None


def items_of(checks: Sequence[Check]) -> list[str]:
    """The partition keys of ``checks``, sorted: the order their in-process turns are taken."""
    return sorted({item_key(check.key) for check in checks})


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

    def change_checks(self, checks: Sequence[Check], now: float, write: bool) -> Change:
        """Checks that all fall on one item: one conditional write, in the key's turn."""

        def change(entry: Entry) -> tuple[bool, Applied]:
            states = {
                (c.key, part): entry.state(part, now) for c in checks for part in c.rule.parts
            }
            writes, decisions, holds = evaluate_checks(checks, states, now)
            if not write or not writes:  # denied (None), or nothing changed
                return False, Applied(decisions, now)
            pk = item_key(checks[0].key)
            put_states(checks, {c.key: pk for c in checks}, {pk: entry}, writes, holds, now)
            return True, Applied(decisions, now)

        return change

    def plan_checks(self, checks: Sequence[Check], now: float, write: bool) -> Plan[Applied]:
        """Checks on several items, all-or-nothing: read every item (one strongly consistent
        ``BatchGetItem``; items this store last wrote need none), run `evaluate_checks`, then
        write every changed item in one ``TransactWriteItems``, each on condition that its
        version did not move, with a ``ConditionCheck`` on each item read but not changed (the
        decision depends on it). A cancellation by conflicts returns the items as the server had
        them, so the retry reads only those it did not get; after a jittered pause when the
        conflict was on fresh reads, at most ``max_retries`` attempts, then `StoreUnavailable`.
        An answer that writes nothing comes from fresh reads."""
        pks = {check.key: item_key(check.key) for check in checks}
        order = sorted(set(pks.values()))
        if len(order) > MAX_ITEMS:
            raise ConfigError(
                f"dynamodb: a transaction holds at most {MAX_ITEMS} items; these checks use "
                f"{len(order)} keys"
            )
        cache = self._cache
        items: dict[str, dict[str, Any] | None] = {}
        if write:
            items = {pk: cache[pk] for pk in order if pk in cache}
        unsure = set(items)  # taken from the cache, not read: may be stale
        conflicts = 0
        try:
            while True:
                missing = [pk for pk in order if pk not in items]
                if missing:
                    items.update((yield from self.plan_read(missing)))
                entries = {pk: Entry(items[pk]) for pk in order}
                states = {
                    (c.key, part): entries[pks[c.key]].state(part, now)
                    for c in checks
                    for part in c.rule.parts
                }
                writes, decisions, holds = evaluate_checks(checks, states, now)
                if not write or not writes:  # denied (None), or nothing changed
                    if unsure:
                        for pk in unsure:
                            del items[pk]
                        unsure.clear()
                        continue
                    return Applied(decisions, now)
                touched = put_states(checks, pks, entries, writes, holds, now)
                requests, left = [], {}
                for pk in order:  # a check on each item read but unchanged: the decision used it
                    entry = entries[pk]
                    if pk in touched:
                        call, left[pk] = entry.write(self.table, pk)
                        requests.append(in_transaction(call))
                    else:
                        requests.append(condition_check(self.table, pk, entry.version))
                reply = yield Call("transact_write_items", {"TransactItems": requests})
                if isinstance(reply, Cancelled):
                    conflicts += 1
                    if conflicts >= self.max_retries:
                        raise StoreUnavailable(
                            f"dynamodb: no consistent transaction on {sorted(pks)!r} after "
                            f"{conflicts} attempts (contention)"
                        )
                    stale = False
                    for pk, reason in zip(order, reply.reasons, strict=True):
                        code = reason.get("Code", _FINE)
                        if code == _FINE:  # its condition held: the item is as read
                            unsure.discard(pk)
                            continue
                        cache.pop(pk, None)
                        stale = stale or pk in unsure
                        unsure.discard(pk)
                        if code == _FAILED and "Item" in reason:
                            items[pk] = reason["Item"]
                        else:  # gone, or busy in another transaction: read it again
                            del items[pk]
                    if not stale:
                        backoff = min(BACKOFF_BASE * 2**conflicts, BACKOFF_CAP)
                        yield Pause(random.uniform(0, backoff))
                    continue
                for pk, written in left.items():
                    if written is None:
                        cache.pop(pk, None)
                    else:
                        if len(cache) >= CACHE_SIZE:
                            cache.clear()
                        cache[pk] = written
                return Applied(decisions, now)
        except BaseException:
            for pk in order:  # a write may or may not have happened
                cache.pop(pk, None)
            raise

    def plan_read(self, pks: list[str]) -> Plan[dict[str, dict[str, Any] | None]]:
        """The items of ``pks`` (None: absent), by strongly consistent ``BatchGetItem``s; keys
        the server left unprocessed (throttling) are asked again after a pause."""
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(pks)
        keys = [{KEY: {"S": pk}} for pk in pks]
        pauses = 0
        while keys:
            ask, keys = keys[:MAX_ITEMS], keys[MAX_ITEMS:]
            request = {self.table: {"Keys": ask, "ConsistentRead": True}}
            reply = yield Call("batch_get_item", {"RequestItems": request})
            for item in reply.get("Responses", {}).get(self.table, ()):
                found[item[KEY]["S"]] = item
            left = reply.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            if left:
                pauses += 1
                yield Pause(random.uniform(0, min(BACKOFF_BASE * 2**pauses, BACKOFF_CAP)))
                keys = left + keys
        return found

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
