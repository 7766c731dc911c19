"""Everything the sync and async PostgreSQL stores share that is not I/O: options, the schema and
its versioned migration (as a generator of statements that a driver runs), identifiers, argument
packing and row parsing, how long a caller may wait (the deadlines), and the mapping of driver
errors to `StoreUnavailable`.

The drivers in :mod:`ratekeeper.stores.postgres` only send what is built here.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import re
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ratekeeper.algorithms.checks import Check
from ratekeeper.decision import Decision, from_rows
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.stores.base import LEASE_PART, Applied, Rule

__all__ = [
    "MIGRATION_TIMEOUT",
    "SCHEMA_VERSION",
    "UNAVAILABLE",
    "Migration",
    "Options",
    "PostgresCore",
    "TimeSource",
    "is_unavailable",
]

TimeSource = Literal["server", "client"]

# Bump when schema.sql changes; `migrate()` re-runs the (idempotent) schema when the database
# holds an older version.
SCHEMA_VERSION = 6

# Errors raised by the client itself that mean "the server cannot be used right now" (refused,
# reset, lost, no pooled connection in time). Errors the server sends are classified by SQLSTATE.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    OSError,
)
# SQLSTATE classes (first two characters) and codes meaning "the store cannot answer now": the
# connection failed (08), authentication (28), insufficient resources (53, e.g. too many
# clients), operator intervention (57: admin or crash shutdown, cannot connect now, query
# canceled by statement_timeout), system errors (58), a read-only server after a failover or a
# hot standby (25006), lock_timeout (55P03), and, once retries are spent, serialization failures
# and deadlocks (40001, 40P01) or a commit of unknown outcome (40003).
_UNAVAILABLE_CLASSES = frozenset({"08", "28", "53", "57", "58"})
_UNAVAILABLE_CODES = frozenset({"25006", "55P03", "40001", "40P01", "40003"})
# Retried (at once, within the decision's deadline) before they count as unavailable.
_RETRYABLE_CODES = frozenset({"40001", "40P01"})
_RETRIES = 2
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
    "charge",
    "refund",
    "step",
    "checks",
)
# Client-side deadline of the migration's DDL statements (they may wait for other migrators and
# for sessions using the functions); the same value is set server-side with SET LOCAL.
MIGRATION_TIMEOUT = 30.0
# How long pooled connections are checked before use after a failure (a restarted server leaves
# dead ones in the pool).
_SUSPECT_SECONDS = 5.0
# The share of statement_timeout that a round trip always gets, however long its call queued for
# a connection: while all is well, and in the seconds after a failure (see round_trip_timeout).
_LEAST_SHARE = 0.5
_SUSPECT_SHARE = 0.1
# While the server is in doubt, callers wait for a connection in slices this long, re-checking
# its health between them (how soon a caller notices that the server refuses connections).
_SLICE = 0.05
_MIN_WAIT = 0.001  # seconds: psycopg_pool refuses a wait of 0
# psycopg_pool retries a lost connection with a doubling pause (1, 2, 4, 8 s...) for up to its
# reconnect_timeout (5 minutes): after a long outage the server would be back long before the
# pool tried again. Past this window it gives up the retries, and the next caller waiting for a
# connection makes it connect at once: a returning server is found within about this long.
_RECONNECT_WINDOW = 2.0
# TCP keepalives (unless the URL sets them): an idle pooled connection over a dead link is found
# and replaced without waiting for the kernel's two-hour default.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
# One statement as a driver runs it: (query, params, fetch rows?, client-side deadline in s).
Statement = tuple[sql.SQL | sql.Composed, Sequence[Any], bool, float | None]
Migration = Generator[Statement, list[tuple[Any, ...]] | None, bool]


@dataclass(frozen=True)
class Options:
    """Store options (keyword arguments of the stores and ``from_url``)."""

    schema: str = "public"
    table_prefix: str = "ratekeeper_"
    time_source: TimeSource = "server"
    connect_timeout: float = 2.0  # libpq's minimum is 2 s (the pool connects in the background)
    # The per-operation deadline, client-side (a round trip, and the wait for a connection unless
    # the server is visibly answering) and server-side (statement and lock timeouts).
    statement_timeout: float = 0.5
    pool_timeout: float = 5.0  # seconds a caller may queue for a free connection (healthy server)
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


def schema_text() -> str:
    """The SQL of the schema (``schema.sql``, shipped in the package)."""
    return importlib.resources.files(__package__).joinpath("schema.sql").read_text("utf-8")


def sql_algorithms(text: str) -> frozenset[str]:
    """The algorithms the SQL port runs: the names ``f_apply`` dispatches on."""
    body = text[text.index("FUNCTION {f_apply}(") :].split("\n--;;\n", 1)[0]
    return frozenset(re.findall(r"algo = '(\w+)'", body))


class PostgresCore:
    """The pure part of a PostgreSQL store: what to send, and what the answers mean."""

    #: The algorithms this store can run: those its SQL port dispatches on (see `sql_algorithms`).
    algorithms: frozenset[str] = sql_algorithms(schema_text())

    def __init__(self, options: Options) -> None:
        self.options = options
        o = options
        self._client_time = o.time_source == "client"
        self._extra = o.client_grace if self._client_time else 1.0
        self._rules: dict[tuple[str, ...], _RuleArgs] = {}
        self._last_cleanup = time.monotonic()
        self.ready = not o.auto_migrate  # the schema is known to be current
        # Health, in monotonic time: callers wait long for a connection only while it is good.
        self._suspect_until = 0.0  # until then pooled connections are checked before use
        self._failing = False  # the last call failed: wait only briefly for a connection
        self._connected = False  # a call succeeded once
        self._progress_at = -math.inf  # the last answer (round trip or new connection)
        self._failed_at = -math.inf  # the last failure
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
        self.q_checks = sql.SQL(
            "SELECT {}(%s::text[], %s::text[], %s::float8[], %s::int[], %s::text[], "
            "%s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::int[], %s::float8[], "
            "%s::float8[], %s::float8, %s::boolean, %s::float8, %s::int)"
        ).format(ids["f_checks"])
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
            "reconnect_timeout": _RECONNECT_WINDOW,
            "open": False,
            "name": "ratekeeper",
        }

    def conninfo(self, base: str) -> str:
        """The connection string plus a connect timeout and TCP keepalives (unless the URL sets
        them) and the server-side statement and lock timeouts (added to any ``options``)."""
        params = conninfo_to_dict(base)
        ms = max(1, round(self.options.statement_timeout * 1000))
        extra: dict[str, Any] = {
            "options": f"{params.get('options') or ''} -c statement_timeout={ms} "
            f"-c lock_timeout={ms}".strip()
        }
        defaults = {"connect_timeout": max(2, round(self.options.connect_timeout)), **_KEEPALIVES}
        extra.update((k, v) for k, v in defaults.items() if k not in params)
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

    def checks_args(self, checks: Sequence[Check], now: float, write: bool) -> list[Any]:
        """The arguments of ``f_checks``: the distinct (key, part) slots with their horizons,
        then one entry per (check, limit) item naming its slot."""
        slots: dict[tuple[str, str], int] = {}
        horizons: list[float] = []
        items: list[list[Any]] = []
        for check in checks:
            algorithm = check.rule.algorithm
            key = db_key(check.key)
            for part, limit, keep in zip(
                check.rule.parts, check.rule.limits, check.keeps(), strict=True
            ):
                horizon = float(algorithm.horizon(limit))
                slot = slots.get((key, part))
                if slot is None:
                    slot = slots[(key, part)] = len(slots) + 1
                    horizons.append(horizon)
                elif horizon > horizons[slot - 1]:
                    horizons[slot - 1] = horizon
                items.append(
                    [
                        str(slot),
                        algorithm.name,
                        repr(float(limit.amount)),
                        repr(limit.per),
                        repr(float(limit.capacity)),
                        repr(check.cost),
                        str(check.mode),
                        repr(keep),
                        repr(float(check.at)),
                    ]
                )
        columns = list(zip(*items, strict=True)) if items else [()] * 9
        return [
            _array([key for key, _ in slots]),
            _array([part for _, part in slots]),
            _array([repr(h) for h in horizons]),
            *(_array(column) for column in columns),
            float(now) if self._client_time else None,
            write,
            self._extra,
            self._cleanup_due() if write else 0,
        ]

    def parse_checks(self, checks: Sequence[Check], value: Sequence[float]) -> Applied:
        decisions = []
        at = 0
        for check in checks:
            n = len(check.rule.limits)
            rows = [value[i : i + 5] for i in range(at, at + 5 * n, 5)]
            decisions.append(from_rows(check.rule.limits, rows))
            at += 5 * n
        return Applied(decisions, float(value[-1]))

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
        text = schema_text()
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
        version = sql.SQL("SELECT version FROM {} WHERE name = 'schema'").format(ids["meta"])
        if not force:  # the fast path, under the usual deadline
            rows = yield (
                sql.SQL("SELECT to_regclass(%s)"),
                [meta_name.as_string(None)],
                True,
                None,
            )
            if rows and rows[0][0] is not None:
                rows = yield (version, [], True, None)
                if rows and rows[0][0] >= SCHEMA_VERSION:
                    return False
        # DDL may wait for other migrators and for sessions using the functions: allow it time.
        ms = round(MIGRATION_TIMEOUT * 1000)
        ddl = MIGRATION_TIMEOUT
        yield (sql.SQL(f"SET LOCAL statement_timeout = {ms}"), [], False, None)
        yield (sql.SQL(f"SET LOCAL lock_timeout = {ms}"), [], False, None)
        yield (sql.SQL("SELECT pg_advisory_xact_lock(%s)"), [self.lock_id], False, ddl)
        yield (sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ids["schema"]), [], False, ddl)
        yield (
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, version int NOT NULL)"
            ).format(ids["meta"]),
            [],
            False,
            ddl,
        )
        rows = yield (version, [], True, ddl)
        if not force and rows and rows[0][0] >= SCHEMA_VERSION:
            return False  # another app server migrated while we waited for the lock
        for statement in self.schema_statements():
            yield (statement, [], False, ddl)
        yield (
            sql.SQL(
                "INSERT INTO {} (name, version) VALUES ('schema', %s) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version"
            ).format(ids["meta"]),
            [SCHEMA_VERSION],
            False,
            ddl,
        )
        return True

    # -- deadlines ------------------------------------------------------------------------------

    def round_trip_timeout(self, started: float, timeout: float | None = None) -> float:
        """The client-side deadline of a statement (or connection check) of a call that started
        at ``started``: what is left of its ``statement_timeout``, but at least a share of it —
        half while all is well (a call that queued on a busy, healthy pool still gets time to be
        answered), a tenth for a few seconds after a failure (a check and a round trip then fit
        in the call's budget); or ``timeout`` for a statement with its own (the migration's
        DDL)."""
        if timeout is not None:
            return timeout
        t = self.options.statement_timeout
        now = time.monotonic()
        least = _SUSPECT_SHARE if now < self._suspect_until else _LEAST_SHARE
        return max(started + t - now, t * least)

    def must_check(self) -> bool:
        """Whether a pooled connection is checked before use: for a few seconds after a failure
        (a restarted server leaves dead ones in the pool)."""
        return time.monotonic() < self._suspect_until

    def waits(self, started: float) -> Iterator[float]:
        """How long to wait, slice after slice, for a pooled connection (or for another caller's
        schema set-up), for a call that started at ``started`` (monotonic); the caller gives up
        when this ends.

        - While the server is failing: ``down_timeout``.
        - Otherwise ``statement_timeout``. Past it, a caller keeps queueing, up to
          ``pool_timeout``, only while the server is visibly answering (an answer within the
          last ``statement_timeout``, no failure since the call started): on a healthy server a
          busy pool is not an outage, while under a fault (frozen, blackholed, slow) every waiter
          gives up about ``statement_timeout`` after the last answer.
        - At once (after one short slice) when the pool's last attempt to connect failed and
          the server is failing, was never reached, or failed since the call started: a
          refusing server answers at once.
        """
        o = self.options
        first = True
        while True:
            now = time.monotonic()
            if self._failing:
                end = started + o.down_timeout
            else:
                end = started + o.statement_timeout
                if now >= end and self._failed_at < started:
                    end = min(started + o.pool_timeout, self._progress_at + o.statement_timeout)
            # In slices (noticing a refusing server at once) unless all is well: re-queueing
            # after each slice costs a busy pool its first-come first-served order (a waiter
            # re-queued every slice behind a deeper queue would starve).
            sliced = self.connect_error is not None or self._failing or not self._connected
            refused = self.connect_error is not None and (
                self._failing or not self._connected or self._failed_at >= started
            )
            if not first and (now >= end or refused):
                return
            first = False
            yield max(min(_SLICE, end - now) if sliced else end - now, _MIN_WAIT)

    def no_connection(self, started: float) -> psycopg_pool.PoolTimeout:
        return psycopg_pool.PoolTimeout(f"no connection within {time.monotonic() - started:.2f} s")

    def setup_timeout(self, started: float) -> StoreUnavailable:
        return StoreUnavailable(
            "postgresql unavailable: the schema set-up by another caller did not finish within "
            f"{time.monotonic() - started:.2f} s"
        )

    # -- failures ------------------------------------------------------------------------------

    def retry(self, exc: Exception, attempt: int, started: float) -> bool:
        """After a call failed with ``exc``: True to try again; else raises `StoreUnavailable`
        when the store cannot answer now, or returns False (the caller re-raises ``exc``)."""
        if isinstance(exc, StoreUnavailable):
            return False
        if isinstance(exc, MISSING_SCHEMA):
            if attempt or not self.options.auto_migrate:
                return False
            self.ready = False  # the schema was dropped: set it up again, retry once
            return True
        code = getattr(exc, "sqlstate", None)
        if (
            code in _RETRYABLE_CODES
            and attempt < _RETRIES
            and time.monotonic() < started + self.options.statement_timeout
        ):
            return True
        if is_unavailable(exc):
            raise self.unavailable(exc) from exc
        return False

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """The `StoreUnavailable` for a driver error; marks the server as failing for a while."""
        last_error = self.connect_error
        if not isinstance(exc, psycopg_pool.PoolTimeout) or last_error is not None:
            # a real failure, not just every connection busy: answer fast for a while
            self.failed()
        if isinstance(exc, psycopg_pool.PoolTimeout) and last_error is not None:
            detail = f"{exc} (last connection error: {_describe(last_error)})"
        else:
            detail = _describe(exc)
        return StoreUnavailable(f"postgresql unavailable: {detail}")

    def timed_out(self, timeout: float) -> StoreUnavailable:
        """A round trip outlived its client-side deadline (its connection was cut)."""
        self.failed()
        return StoreUnavailable(f"postgresql unavailable: no answer within {timeout:g} s")

    def failed(self) -> None:
        now = time.monotonic()
        self._failed_at = now
        self._suspect_until = now + _SUSPECT_SECONDS
        self._failing = True

    def progress(self) -> None:
        """The server answered (a round trip, or a new connection)."""
        self._progress_at = time.monotonic()

    def healthy(self) -> None:
        self._progress_at = time.monotonic()
        self._failing = False
        self._connected = True


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the store cannot answer now" (rather than a bug or bad input)."""
    code = getattr(exc, "sqlstate", None)
    if code is not None:
        return code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_CODES
    return isinstance(exc, UNAVAILABLE)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
