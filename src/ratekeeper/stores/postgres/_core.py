"""Everything the sync and async PostgreSQL stores share that is not I/O: options, the schema and
its versioned migration (as a generator of statements that a driver runs), identifiers, argument
packing and row parsing, and the mapping of driver errors to `StoreUnavailable`.

The drivers in :mod:`ratekeeper.stores.postgres` only send what is built here.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ratekeeper.algorithms import ALGORITHMS
from ratekeeper.decision import Decision, from_rows
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.base import LEASE_PART, Rule

__all__ = [
    "SCHEMA_VERSION",
    "UNAVAILABLE",
    "Migration",
    "Options",
    "PostgresCore",
    "TimeSource",
]

TimeSource = Literal["server", "client"]

# Bump when schema.sql changes; `migrate()` re-runs the (idempotent) schema when the database
# holds an older version.
SCHEMA_VERSION = 5

# Errors that mean "the server cannot be used right now" (refused, reset, authentication failed,
# admin shutdown, statement timeout, no pooled connection in time).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    OSError,
)
# The schema was dropped behind our back: set it up again and retry once.
MISSING_SCHEMA: tuple[type[BaseException], ...] = (
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
)

_URL_OPTIONS = ("schema", "table_prefix", "time_source")
_MAX_PLAIN_KEY = 200
_HASHED = "sha256:"
_FUNCTIONS = (
    "floordiv",
    "token_bucket",
    "gcra",
    "fixed_window",
    "sliding_window",
    "sliding_log",
    "apply",
    "cleanup",
    "hit",
    "lease_acquire",
    "lease_release",
)
# One statement as a driver runs it: (query, params, fetch rows?).
Statement = tuple[sql.SQL | sql.Composed, Sequence[Any], bool]
Migration = Generator[Statement, list[tuple[Any, ...]] | None, bool]


@dataclass(frozen=True)
class Options:
    """Store options (keyword arguments of the stores and ``from_url``)."""

    schema: str = "public"
    table_prefix: str = "ratekeeper_"
    time_source: TimeSource = "server"
    connect_timeout: float = 2.0  # libpq's minimum is 2 s
    statement_timeout: float = 1.0  # seconds, set on every pooled connection
    pool_timeout: float = 5.0  # seconds a caller may queue for a free pooled connection
    down_timeout: float = 0.1  # the wait while the server is known to be failing
    pool_min_size: int = 1
    pool_max_size: int = 16
    cleanup_interval: float | None = 60.0  # seconds between opportunistic cleanups; None: never
    cleanup_batch: int = 1000  # rows deleted at most by one opportunistic cleanup
    client_grace: float = 600.0  # time_source="client": extra seconds a row is kept
    auto_migrate: bool = True  # set the schema up at first use

    def __post_init__(self) -> None:
        for name in ("schema", "table_prefix"):
            value = getattr(self, name)
            if not isinstance(value, str) or "\x00" in value or "$" in value:
                raise ConfigError(f"{name} must be a string without '$' or NUL, got {value!r}")
        if not self.schema:
            raise ConfigError("schema must not be empty")
        if len((self.table_prefix + "lease_acquire").encode()) > 63:
            raise ConfigError(f"table_prefix {self.table_prefix!r} is too long (max 50 bytes)")
        if self.time_source not in ("server", "client"):
            raise ConfigError(f"time_source must be 'server' or 'client', got {self.time_source!r}")
        for name in ("connect_timeout", "statement_timeout", "pool_timeout", "down_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not 0 <= self.pool_min_size <= self.pool_max_size or self.pool_max_size < 1:
            raise ConfigError("need 0 <= pool_min_size <= pool_max_size and pool_max_size >= 1")


def split_url(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Take ratekeeper's own query parameters (``schema``, ``table_prefix``, ``time_source``) out
    of a ``postgresql://`` URL; keyword options win over URL ones."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigError(f"not a PostgreSQL URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _URL_OPTIONS}
    rest = [(k, v) for k, v in query if k not in _URL_OPTIONS]
    conninfo = urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote)))
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"bad PostgreSQL URL {url!r}: {exc}") from None
    return conninfo, {**ours, **options}


def db_key(key: str) -> str:
    """The key column for a user key: the key itself when short and plain, else a hash.

    PostgreSQL text cannot hold NUL and index entries are size-limited, so long or odd keys are
    stored as ``sha256:<hex>``; plain keys never start with that prefix, so both never collide.
    """
    if len(key) <= _MAX_PLAIN_KEY and "\x00" not in key and not key.startswith(_HASHED):
        try:
            key.encode()
        except UnicodeEncodeError:
            pass
        else:
            return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return _HASHED + digest


def _array(items: Sequence[str]) -> str:
    """A PostgreSQL array literal (the server casts it): adapting a Python list costs more per
    call than the whole decision's arithmetic, so a rule's arrays are spelled out once."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


class _RuleArgs:
    """A rule's per-limit arrays, computed once, as array literals."""

    __slots__ = ("algo", "amounts", "caps", "horizons", "parts", "pers")

    def __init__(self, rule: Rule) -> None:
        limits = rule.limits
        self.parts = _array(rule.parts)
        self.algo = rule.algorithm.name
        self.amounts = _array([repr(float(limit.amount)) for limit in limits])
        self.pers = _array([repr(limit.per) for limit in limits])
        self.caps = _array([repr(float(limit.capacity)) for limit in limits])
        self.horizons = _array([repr(float(rule.algorithm.horizon(limit))) for limit in limits])


class PostgresCore:
    """The pure part of a PostgreSQL store: what to send, and what the answers mean."""

    #: The algorithms this store can run (custom ones have no SQL port).
    algorithms: frozenset[str] = frozenset(ALGORITHMS)

    def __init__(self, options: Options) -> None:
        self.options = options
        o = options
        self._client_time = o.time_source == "client"
        self._extra = o.client_grace if self._client_time else 1.0
        self._rules: dict[tuple[str, ...], _RuleArgs] = {}
        self._last_cleanup = time.monotonic()
        self._suspect_until = 0.0  # monotonic time until which pooled connections are checked
        self._failing = False  # the last call failed: wait only briefly for a connection
        self._connected = False  # a call succeeded once
        # The pool's last failed attempt to connect (None after a success): "no connection in
        # time" can then say why, and callers stop waiting for a server that refuses them.
        self.connect_error: BaseException | None = None
        prefix, schema = o.table_prefix, o.schema
        self.ids: dict[str, sql.Composable] = {
            "schema": sql.Identifier(schema),
            "state": sql.Identifier(schema, prefix + "state"),
            "meta": sql.Identifier(schema, prefix + "meta"),
            **{f"f_{name}": sql.Identifier(schema, prefix + name) for name in _FUNCTIONS},
        }
        ids = self.ids
        self.q_hit = sql.SQL(
            "SELECT {}(%s::text, %s::text[], %s::text, %s::float8[], %s::float8[], "
            "%s::float8[], %s::float8[], %s::float8, %s::float8, %s::boolean, %s::float8, "
            "%s::int)"
        ).format(ids["f_hit"])
        self.q_acquire = sql.SQL(
            "SELECT {}(%s::text, %s::text, %s::int, %s::float8, %s::float8, %s::float8)"
        ).format(ids["f_lease_acquire"])
        self.q_release = sql.SQL("SELECT {}(%s::text, %s::text, %s::float8, %s::float8)").format(
            ids["f_lease_release"]
        )
        self.q_reset = sql.SQL("DELETE FROM {} WHERE key = %s AND part = ANY(%s::text[])").format(
            ids["state"]
        )
        self.q_cleanup = sql.SQL("SELECT {}(%s::int)").format(ids["f_cleanup"])
        self.q_ping = "SELECT 1"
        # A stable 64-bit advisory lock id per (schema, prefix): migrations of the same tables
        # from many app servers at once run one after the other.
        digest = hashlib.sha256(f"ratekeeper\x00{schema}\x00{prefix}".encode()).digest()
        self.lock_id = int.from_bytes(digest[:8], "big", signed=True)

    # -- statements and arguments ------------------------------------------------------------

    def pool_kwargs(self) -> dict[str, Any]:
        """What both drivers give their psycopg_pool pool besides the connection class."""
        o = self.options
        return {
            "kwargs": {"autocommit": True},
            "min_size": o.pool_min_size,
            "max_size": o.pool_max_size,
            "timeout": o.pool_timeout,
            "open": False,
            "name": "ratekeeper",
        }

    def conninfo(self, base: str) -> str:
        """The connection string plus a connect timeout (unless the URL sets one) and the
        server-side statement and lock timeouts (added to any ``options`` of the URL)."""
        params = conninfo_to_dict(base)
        ms = max(1, round(self.options.statement_timeout * 1000))
        extra: dict[str, Any] = {
            "options": f"{params.get('options') or ''} -c statement_timeout={ms} "
            f"-c lock_timeout={ms}".strip()
        }
        if "connect_timeout" not in params:
            extra["connect_timeout"] = max(2, round(self.options.connect_timeout))
        return make_conninfo(base, **extra)

    def _rule_args(self, rule: Rule) -> _RuleArgs:
        args = self._rules.get(rule.parts)
        if args is None:
            if len(self._rules) > 1024:
                self._rules.clear()
            args = self._rules[rule.parts] = _RuleArgs(rule)
        return args

    def hit_args(self, key: str, rule: Rule, cost: float, now: float, write: bool) -> list[Any]:
        a = self._rule_args(rule)
        return [
            db_key(key),
            a.parts,
            a.algo,
            a.amounts,
            a.pers,
            a.caps,
            a.horizons,
            float(cost),
            float(now) if self._client_time else None,
            write,
            self._extra,
            self._cleanup_due() if write else 0,
        ]

    def _cleanup_due(self) -> int:
        """The batch size when this call should also delete some expired rows, else 0."""
        interval = self.options.cleanup_interval
        if not interval:
            return 0
        now = time.monotonic()
        if now - self._last_cleanup < interval:
            return 0
        self._last_cleanup = now
        return self.options.cleanup_batch

    def parse_hit(self, rule: Rule, value: Sequence[float]) -> Decision:
        rows = [value[i : i + 5] for i in range(0, len(value), 5)]
        return from_rows(rule.limits, rows)

    def acquire_args(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> list[Any]:
        return [
            db_key(key),
            lease_id,
            limit,
            float(ttl),
            float(now) if self._client_time else None,
            self._extra,
        ]

    def release_args(self, key: str, lease_id: str, now: float) -> list[Any]:
        return [db_key(key), lease_id, float(now) if self._client_time else None, self._extra]

    def reset_args(self, key: str, rule: Rule) -> list[Any]:
        return [db_key(key), [*rule.parts, LEASE_PART]]

    # -- migration -----------------------------------------------------------------------------

    def schema_statements(self) -> list[sql.Composed]:
        text = importlib.resources.files(__package__).joinpath("schema.sql").read_text("utf-8")
        statements = []
        for chunk in text.split("\n--;;\n"):
            body = "\n".join(
                line for line in chunk.splitlines() if not line.startswith("-- ") and line != "--"
            ).strip()
            if body:
                statements.append(sql.SQL(body).format(**self.ids))
        return statements

    def migration(self, force: bool = False) -> Migration:
        """The migration, as statements for a driver to run in one transaction.

        Fast path: when the recorded version is current, nothing is locked or changed. Otherwise
        an advisory transaction lock serializes concurrent migrators, and the (idempotent)
        schema is applied. Returns True when something was (re)applied.
        """
        ids = self.ids
        meta_name = sql.Identifier(self.options.schema, self.options.table_prefix + "meta")
        if not force:
            rows = yield (sql.SQL("SELECT to_regclass(%s)"), [meta_name.as_string(None)], True)
            if rows and rows[0][0] is not None:
                rows = yield (
                    sql.SQL("SELECT version FROM {} WHERE name = 'schema'").format(ids["meta"]),
                    [],
                    True,
                )
                if rows and rows[0][0] >= SCHEMA_VERSION:
                    return False
        # DDL may wait for other migrators and for sessions using the functions: allow it time.
        yield (sql.SQL("SET LOCAL statement_timeout = 30000"), [], False)
        yield (sql.SQL("SET LOCAL lock_timeout = 30000"), [], False)
        yield (sql.SQL("SELECT pg_advisory_xact_lock(%s)"), [self.lock_id], False)
        yield (sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ids["schema"]), [], False)
        yield (
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, version int NOT NULL)"
            ).format(ids["meta"]),
            [],
            False,
        )
        rows = yield (
            sql.SQL("SELECT version FROM {} WHERE name = 'schema'").format(ids["meta"]),
            [],
            True,
        )
        if not force and rows and rows[0][0] >= SCHEMA_VERSION:
            return False  # another app server migrated while we waited for the lock
        for statement in self.schema_statements():
            yield (statement, [], False)
        yield (
            sql.SQL(
                "INSERT INTO {} (name, version) VALUES ('schema', %s) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version"
            ).format(ids["meta"]),
            [SCHEMA_VERSION],
            False,
        )
        return True

    # -- failures ------------------------------------------------------------------------------

    def pool_wait(self) -> float:
        """How long to wait for a pooled connection: ``pool_timeout`` when all is well (callers
        queue for a free connection), ``down_timeout`` while the server is known to be failing,
        the connect timeout until a first connection was made."""
        o = self.options
        if self._failing:
            return o.down_timeout
        if not self._connected:
            return min(o.pool_timeout, o.connect_timeout + 0.5)
        return o.pool_timeout

    def sliced_wait(self) -> bool:
        """Whether to wait for a connection in short slices (checking `keep_waiting`): until
        the store has worked once, and while it fails. Otherwise callers simply queue."""
        return self._failing or not self._connected

    def keep_waiting(self, deadline: float) -> bool:
        """After a short wait for a pooled connection: wait more, unless the pool's last attempt
        to connect failed (then the server is down, or refuses us: answer now)."""
        return time.monotonic() < deadline and self.connect_error is None

    def must_check(self) -> bool:
        """Whether a pooled connection should be tested before use (after a recent failure)."""
        return time.monotonic() < self._suspect_until

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """The `StoreUnavailable` for a driver error; marks the server as suspect for a while."""
        last_error = self.connect_error
        if not isinstance(exc, psycopg_pool.PoolTimeout) or last_error is not None:
            # a real failure, not just every connection busy: answer fast for a while
            self._suspect_until = time.monotonic() + 5.0
            self._failing = True
        if isinstance(exc, psycopg_pool.PoolTimeout) and last_error is not None:
            detail = f"{exc} (last connection error: {_describe(last_error)})"
        else:
            detail = _describe(exc)
        return StoreUnavailable(f"postgresql unavailable: {detail}")

    def healthy(self) -> None:
        self._failing = False
        self._connected = True


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
