"""Rules changed at run time, kept in the limiters' shared store so every instance sees them.

A *rule* is one limiter definition as the admin API received it (``PUT /limiters/{name}``: plain
JSON fields), or a tombstone (``DELETE``). When the limiter's store is shared (Redis, PostgreSQL,
NATS), the rule is written to that server with a version, and every process that runs a
`RuleSync` on a registry naming the same server applies it:

- **Polling, once a second** (`POLL_INTERVAL`): each round reads every rule of each shared store
  (a handful of rows) and applies those whose version is newer than the one applied here. A
  change reaches every instance within about one interval; polling needs no listener connection
  and survives reconnects, failovers and missed messages by construction. Versions are compared
  per limiter, so two writers committing out of order are both seen.
- **At start**, `RuleSync.start` (and `load`) applies the stored rules before returning, so a
  process restarted later starts from them, a tombstone removing a limiter its file defines.
- A rule found in a store is applied with that store's *local* name, whatever the writer
  called it.

Storage, with each server's own client library (the store classes' transports are theirs):

=========== ============================================================================
redis://    hash ``ratekeeper:rules`` (field: name, value: ``"<version> <json>"``), versions from
            ``INCR ratekeeper:rules:version``, written by one Lua script (atomic)
postgresql  table ``ratekeeper_rules(name, fields jsonb, version)``, versions from the sequence
            ``ratekeeper_rules_version`` (created on first use)
nats://     JetStream KV bucket ``ratekeeper_rules``, one key per name (hex of its UTF-8), the
            entry's revision as version
=========== ============================================================================

Every operation has a deadline of `RULES_DEADLINE` seconds; a store that does not answer is
retried at the next round (and a write through the API answers 503, changing nothing).
Cluster and sentinel Redis URLs are not used for rules (the rules stay local to the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.registry import Registry

__all__ = [
    "POLL_INTERVAL",
    "RULES_DEADLINE",
    "RuleStore",
    "RuleSync",
    "StoredRule",
    "rule_store",
    "sync_rules",
]

log = logging.getLogger("ratekeeper.admin")

POLL_INTERVAL: Final = 1.0  # seconds between two reads of the stored rules
RULES_DEADLINE: Final = 0.5  # seconds for one rules operation (connect included)
REDIS_HASH: Final = "ratekeeper:rules"
REDIS_VERSION: Final = "ratekeeper:rules:version"
PG_TABLE: Final = "ratekeeper_rules"
PG_SEQUENCE: Final = "ratekeeper_rules_version"
PG_LOCK: Final = 0x7261746B  # advisory lock id serializing the CREATE of the table ("ratk")
NATS_BUCKET: Final = "ratekeeper_rules"
SHARED_SCHEMES: Final = ("redis", "rediss", "unix", "postgresql", "postgres", "nats")

_REDIS_WRITE: Final = """
local version = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], version .. ' ' .. ARGV[2])
return version
"""


@dataclass(frozen=True)
class StoredRule:
    """One stored rule: the limiter's fields, or None for a deleted limiter."""

    version: int
    fields: dict[str, Any] | None


class RuleStore(Protocol):
    """Where the rules of one shared store live."""

    def load(self) -> dict[str, StoredRule]:
        """Every stored rule (`StoreUnavailable` when the server does not answer)."""
        ...

    def write(self, name: str, fields: Mapping[str, Any] | None) -> int:
        """Store ``fields`` (None: a tombstone) for ``name``; returns its new version."""
        ...

    def close(self) -> None: ...


def _encode(fields: Mapping[str, Any] | None) -> str:
    return json.dumps(None if fields is None else dict(fields), sort_keys=True)


def _decode(text: str | bytes) -> dict[str, Any] | None:
    value = json.loads(text)
    return value if isinstance(value, dict) else None


class RedisRules:
    """Rules in a Redis hash (redis-py)."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(
            url,
            socket_timeout=RULES_DEADLINE,
            socket_connect_timeout=RULES_DEADLINE,
            retry=None,
        )
        self._write = self._client.register_script(_REDIS_WRITE)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def load(self) -> dict[str, StoredRule]:
        try:
            raw: dict[bytes, bytes] = self._client.hgetall(REDIS_HASH)  # type: ignore[assignment]
        except self._errors as exc:
            raise StoreUnavailable(f"rules: redis: {exc}") from exc
        rules = {}
        for name, value in raw.items():
            version, _, text = value.partition(b" ")
            rules[name.decode()] = StoredRule(int(version), _decode(text))
        return rules

    def write(self, name: str, fields: Mapping[str, Any] | None) -> int:
        try:
            return int(self._write(keys=[REDIS_HASH, REDIS_VERSION], args=[name, _encode(fields)]))
        except self._errors as exc:
            raise StoreUnavailable(f"rules: redis: {exc}") from exc

    def close(self) -> None:
        self._client.close()


class PostgresRules:
    """Rules in a PostgreSQL table (psycopg), one autocommit connection kept under a lock."""

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._url = url
        self._conn: Any = None
        self._lock = threading.Lock()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        psycopg = self._psycopg
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self._url,
                        autocommit=True,
                        connect_timeout=max(1, round(RULES_DEADLINE)),
                        options=f"-c statement_timeout={int(RULES_DEADLINE * 1000)}",
                    )
                    self._create(self._conn)
                cursor = self._conn.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                raise StoreUnavailable(f"rules: postgresql: {exc}") from exc

    @staticmethod
    def _create(conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK,))
            conn.execute(f"CREATE SEQUENCE IF NOT EXISTS {PG_SEQUENCE}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {PG_TABLE} (name text PRIMARY KEY, fields jsonb, "
                "version bigint NOT NULL)"
            )

    def load(self) -> dict[str, StoredRule]:
        rows = self._run(f"SELECT name, fields, version FROM {PG_TABLE}")
        return {
            name: StoredRule(int(version), fields if isinstance(fields, dict) else None)
            for name, fields, version in rows
        }

    def write(self, name: str, fields: Mapping[str, Any] | None) -> int:
        rows = self._run(
            f"INSERT INTO {PG_TABLE} (name, fields, version) "
            f"VALUES (%s, %s::jsonb, nextval('{PG_SEQUENCE}')) ON CONFLICT (name) DO UPDATE "
            "SET fields = excluded.fields, version = excluded.version RETURNING version",
            (name, _encode(fields)),
        )
        return int(rows[0][0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class NatsRules:
    """Rules in a JetStream KV bucket (nats-py, asyncio: run on a private event-loop thread)."""

    def __init__(self, url: str) -> None:
        import nats

        self._nats = nats
        self._url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ratekeeper-rules-nats", daemon=True
        )
        self._thread.start()
        self._client: Any = None
        self._kv: Any = None

    def _call(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(make(), RULES_DEADLINE), self._loop
        )
        try:
            return future.result(RULES_DEADLINE * 2)
        except (OSError, TimeoutError, FutureTimeout, self._nats.errors.Error) as exc:
            future.cancel()
            raise StoreUnavailable(f"rules: nats: {exc!r}") from exc

    async def _bucket(self) -> Any:
        if self._client is None or not self._client.is_connected:
            if self._client is not None:
                await self._client.close()
            self._client = await self._nats.connect(
                self._url,
                connect_timeout=RULES_DEADLINE,
                allow_reconnect=False,
                max_reconnect_attempts=0,
            )
            js = self._client.jetstream(timeout=RULES_DEADLINE)
            try:
                self._kv = await js.key_value(NATS_BUCKET)
            except self._nats.js.errors.BucketNotFoundError:
                self._kv = await js.create_key_value(bucket=NATS_BUCKET, history=1)
        return self._kv

    async def _load(self) -> dict[str, StoredRule]:
        kv = await self._bucket()
        try:
            keys = await kv.keys()
        except self._nats.js.errors.NoKeysError:
            return {}
        rules = {}
        for key in keys:
            entry = await kv.get(key)
            rules[bytes.fromhex(key).decode()] = StoredRule(
                int(entry.revision), _decode(entry.value)
            )
        return rules

    async def _write(self, name: str, fields: Mapping[str, Any] | None) -> int:
        kv = await self._bucket()
        return int(await kv.put(name.encode().hex(), _encode(fields).encode()))

    def load(self) -> dict[str, StoredRule]:
        rules: dict[str, StoredRule] = self._call(self._load)
        return rules

    def write(self, name: str, fields: Mapping[str, Any] | None) -> int:
        return int(self._call(lambda: self._write(name, fields)))

    def close(self) -> None:
        async def closing() -> None:
            if self._client is not None:
                await self._client.close()

        with contextlib.suppress(StoreUnavailable):
            self._call(closing)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(RULES_DEADLINE * 2)
        if not self._thread.is_alive():
            self._loop.close()


def rule_store(url: str | None) -> RuleStore | None:
    """Where rules of a store with this URL live (None: not a shared store, or one whose rules
    stay local, such as memory, a store object, Redis Cluster or Sentinel)."""
    if not url:
        return None
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SHARED_SCHEMES:
        return None
    if scheme in ("redis", "rediss", "unix"):
        return RedisRules(url)
    if scheme in ("postgresql", "postgres"):
        return PostgresRules(url)
    return NatsRules(url)


class RuleSync:
    """Keeps ``registry``'s limiters in step with the rules stored in its shared stores.

    `start` applies the stored rules, then polls every ``interval`` seconds on a daemon thread;
    `put` and `delete` change a limiter here and in its store (all or nothing: when the store
    cannot be written, `StoreUnavailable` and nothing changed). `close` stops the thread and
    closes the connections it opened.
    """

    def __init__(self, registry: Registry, *, interval: float = POLL_INTERVAL) -> None:
        self.registry = registry
        self.interval = interval
        self._stores: dict[str, RuleStore | None] = {}  # by store name
        self._applied: dict[tuple[str, str], int] = {}  # (store, limiter) -> version applied
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: set[str] = set()

    # -- API -------------------------------------------------------------------------------

    def start(self) -> RuleSync:
        """Apply the stored rules now, then keep polling (idempotent)."""
        self.load()
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="ratekeeper-rules", daemon=True)
            self._thread.start()
        return self

    def load(self) -> None:
        """One round: read every shared store's rules and apply the newer ones."""
        for store in list(self.registry.list_stores()):
            rules = self._rules_of(store)
            if rules is None:
                continue
            try:
                found = rules.load()
            except StoreUnavailable as exc:
                if store not in self._failing:
                    self._failing.add(store)
                    log.warning(
                        "ratekeeper admin: cannot read the rules of store %r: %s", store, exc
                    )
                continue
            self._failing.discard(store)
            with self._lock:
                for name, rule in sorted(found.items(), key=lambda item: item[1].version):
                    self._apply(store, name, rule)

    def shared(self, store: str) -> bool:
        """Whether limiters on ``store`` have their rules kept in it."""
        return self._rules_of(store) is not None

    def version(self, name: str) -> int | None:
        """The version of the stored rule applied for limiter ``name`` (None: not stored)."""
        settings = self.registry.list_limiters().get(name)
        if settings is None:
            return None
        return self._applied.get((str(settings["store"]), name))

    def put(self, name: str, fields: Mapping[str, Any]) -> int | None:
        """Define (or redefine) limiter ``name`` from checked ``fields``, here and, when its store
        is shared, in that store; returns the stored version (None: not shared)."""
        store = str(fields.get("store", "memory"))
        with self._lock:
            before = self.registry.list_limiters().get(name)
            version = self._write(store, name, fields)
            if before is not None and before["store"] != store:
                self._write(str(before["store"]), name, None)  # it left that store
            self.registry.configure_limiter(name, replace=True, **fields)
            return version

    def delete(self, name: str) -> int | None:
        """Remove limiter ``name`` here and, with a tombstone, from its shared store."""
        with self._lock:
            settings = self.registry.list_limiters().get(name)
            if settings is None:
                self.registry.remove_limiter(name)  # the ConfigError naming the known ones
                return None
            version = self._write(str(settings["store"]), name, None)
            self.registry.remove_limiter(name)
            return version

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + RULES_DEADLINE * 4)
            self._thread = None
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for rules in stores:
            if rules is not None:
                rules.close()

    # -- internals -------------------------------------------------------------------------

    def _rules_of(self, store: str) -> RuleStore | None:
        with self._lock:
            if store not in self._stores:
                try:
                    url = self.registry.store_url(store)
                except ConfigError:
                    return None
                self._stores[store] = rule_store(url)
            return self._stores[store]

    def _write(self, store: str, name: str, fields: Mapping[str, Any] | None) -> int | None:
        rules = self._rules_of(store)
        if rules is None:
            return None
        version = rules.write(name, fields)
        self._applied[(store, name)] = version
        return version

    def _apply(self, store: str, name: str, rule: StoredRule) -> None:
        if rule.version <= self._applied.get((store, name), 0):
            return
        self._applied[(store, name)] = rule.version
        current = self.registry.list_limiters().get(name)
        try:
            if rule.fields is None:
                if current is not None and current["store"] == store:
                    self.registry.remove_limiter(name)
            else:
                self.registry.configure_limiter(
                    name, replace=True, **{**rule.fields, "store": store}
                )
        except ConfigError as exc:
            log.warning(
                "ratekeeper admin: stored rule %r (store %r) not applied: %s", name, store, exc
            )

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.load()
            except Exception:  # the thread must outlive any surprise; logged, retried
                log.exception("ratekeeper admin: reading the stored rules failed")


def sync_rules(registry: Registry | None = None, *, interval: float = POLL_INTERVAL) -> RuleSync:
    """Start keeping ``registry`` (default: ratekeeper's default registry) in step with the rules
    stored in its shared stores; in every process that does not serve the admin app itself."""
    if registry is None:
        from ratekeeper.registry import default_registry

        registry = default_registry
    return RuleSync(registry, interval=interval).start()
