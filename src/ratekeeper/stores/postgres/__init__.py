"""PostgreSQL stores (``postgresql://`` and ``postgres://``), sync and asyncio, on psycopg 3.

One round trip per decision: each algorithm is a plpgsql function (a line-by-line port of
:mod:`ratekeeper.algorithms`) and one function call applies a request to every limit of a rule,
all-or-nothing, with the rows locked in (key, part) order so that concurrent callers never
deadlock. Time comes from the server's ``clock_timestamp()``, so app servers with skewed clocks
agree; ``time_source="client"`` uses the limiter's clock instead (how the conformance suite replays
FakeClock traces against the Python reference).

Setup: ``store.migrate()`` (or the first request, unless ``auto_migrate=False``) creates the
schema, the state table and the functions. It is idempotent and versioned, and safe when many app
servers start at once (a transaction-scoped advisory lock serializes the DDL).

Cleanup: every row records when its state is fully replenished (``expires_at``, server time); an
expired row reads as a new key. Expired rows are deleted in batches by :meth:`cleanup` and,
opportunistically, by one request every ``cleanup_interval`` seconds per store object.

Deadlines: every round trip (and the connection check after a failure) has a client-side
deadline, ``statement_timeout`` (0.5 s), also set server-side; a caller waits for a pooled
connection as long at most, unless the server is visibly answering (then it queues, up to
``pool_timeout``: a busy pool on a healthy server is not an outage). At the deadline a watchdog
thread shuts the connection's socket down, so the waiting driver, sync or asyncio, raises at once
whatever the server does (dead, frozen, blackholed, slow) and the connection is discarded, never
reused. So under any fault every decision ends, with :class:`~ratekeeper.StoreUnavailable` (then
``on_store_error``), within about ``2 * statement_timeout``; while the server stays down, within
``down_timeout`` (0.1 s). Server errors meaning "cannot answer now" (read-only after a failover,
shutdown, too many clients, ...) are `StoreUnavailable` too; broken pooled connections are
replaced by the pool.

Everything that is not I/O lives in :mod:`ratekeeper.stores.postgres._core`; the asyncio driver
(`_async_store`) is written by hand and the blocking one generated from it (``scripts/unasync.py``).
"""

from __future__ import annotations

from ratekeeper.stores.postgres._async_store import AsyncPostgresStore
from ratekeeper.stores.postgres._sync_store import PostgresStore

__all__ = ["AsyncPostgresStore", "PostgresStore"]
