"""PostgreSQL under races and faults: concurrency caps under contention, a read-only server, a
burst on a cold pool, and the decision-latency bound when the server is killed, frozen (SIGSTOP of
a private cluster), blackholed, reset or slow (tests/faultproxy.py)."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ratekeeper.stores.postgres import AsyncPostgresStore, PostgresStore
from ratekeeper.stores.postgres._core import db_key

from .backends.postgres import SCHEMA, postgres_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def url() -> str:
    return postgres_url()


@pytest.fixture
def options() -> dict[str, Any]:
    return {"schema": SCHEMA, "table_prefix": f"f{uuid.uuid4().hex[:10]}_"}


def lease_query(options: dict[str, Any]) -> sql.Composed:
    """The live lease ids of a key as the table holds them."""
    table = sql.Identifier(options["schema"], options["table_prefix"] + "state")
    return sql.SQL(
        "SELECT ids FROM {} WHERE key = %s AND part = 'concurrency' "
        "AND expires_at > clock_timestamp()"
    ).format(table)


# --------------------------------------------------------------------------- concurrency caps


class Holders:
    """Counts the callers inside a capped block at once, and the most ever seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


GRANTS = 8  # leases each thread must be granted (and hold, and release)
POLL, MAX_POLL = 0.005, 0.2  # seconds between an async task's attempts (growing, jittered)


def test_threads_never_exceed_the_cap_and_every_grant_is_written(url, options) -> None:
    """A release that deleted the row when its last lease went let a waiting acquire find no row,
    grant, and write nothing: 8 threads on a cap of 1 had up to 6 holders at once."""
    store = PostgresStore.from_url(url, **options)
    store.migrate()
    key, query = uuid.uuid4().hex, lease_query(options)
    holders = Holders()
    unwritten: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                start.wait()
                for _ in range(GRANTS):
                    lease = uuid.uuid4().hex
                    while store.acquire_lease(key, lease, 1, 30.0, 0.0) != 0:
                        pass
                    holders.enter()
                    row = conn.execute(query, [db_key(key)]).fetchone()
                    if row is None or lease not in row[0]:
                        unwritten.append(lease)
                    holders.leave()
                    store.release_lease(key, lease, 0.0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert not errors, errors[:3]
    assert holders.most == 1
    assert unwritten == []


async def test_async_tasks_never_exceed_the_cap_and_every_grant_is_written(url, options) -> None:
    store = AsyncPostgresStore.from_url(url, **options)
    await store.migrate()
    key, query = uuid.uuid4().hex, lease_query(options)
    holders = Holders()
    unwritten: list[str] = []
    jitter = random.Random(0)

    async def task(conn: psycopg.AsyncConnection[Any]) -> None:
        lease = uuid.uuid4().hex
        pause = POLL
        while await store.acquire_lease(key, lease, 3, 30.0, 0.0) != 0:
            await asyncio.sleep(pause * jitter.random())
            pause = min(pause * 2, MAX_POLL)
        holders.enter()
        row = await (await conn.execute(query, [db_key(key)])).fetchone()
        if row is None or lease not in row[0]:
            unwritten.append(lease)
        holders.leave()
        await store.release_lease(key, lease, 0.0)

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await asyncio.gather(*(task(conn) for _ in range(300)))
    await store.close()
    assert 1 < holders.most <= 3
    assert unwritten == []
