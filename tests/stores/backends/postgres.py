"""PostgreSQL backend of the conformance suite: the server started by ``scripts/test``
(``RATEKEEPER_POSTGRES_URL``), tables with a per-session prefix, the caller's clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

from ratekeeper.stores.postgres import AsyncPostgresStore, PostgresStore

from . import Backend

SCHEMA = "ratekeeper_test"
PREFIX = f"t{uuid.uuid4().hex[:10]}_"


def postgres_url() -> str:
    url = os.environ.get("RATEKEEPER_POSTGRES_URL")
    if not url:
        pytest.fail(
            "RATEKEEPER_POSTGRES_URL is not set: run the tests with scripts/test (or source the "
            "env file written by `scripts/services start DIR`)"
        )
    return url


# Behaviour tests, not latency tests: a generous deadline, so that a busy test machine cannot
# turn a slow answer into StoreUnavailable (the fault suites use the library's defaults: make_at).
PATIENT = {"statement_timeout": 5.0, "pool_timeout": 10.0}


def make_sync(**options: object) -> PostgresStore:
    options = {
        "schema": SCHEMA,
        "table_prefix": PREFIX,
        "time_source": "client",
        **PATIENT,
        **options,
    }
    return PostgresStore.from_url(postgres_url(), **options)


def make_async(**options: object) -> AsyncPostgresStore:
    options = {
        "schema": SCHEMA,
        "table_prefix": PREFIX,
        "time_source": "client",
        **PATIENT,
        **options,
    }
    return AsyncPostgresStore.from_url(postgres_url(), **options)


def make_at(url: str) -> tuple[Callable[[], PostgresStore], Callable[[], AsyncPostgresStore]]:
    """Stores at ``url`` (a FaultProxy) with the library's default timeouts (the fault suite)."""
    options = {"schema": SCHEMA, "table_prefix": PREFIX}
    return (
        lambda: PostgresStore.from_url(url, **options),
        lambda: AsyncPostgresStore.from_url(url, **options),
    )


BACKENDS = [
    Backend(
        "postgres",
        make_sync=make_sync,
        make_async=make_async,
        marks=(pytest.mark.postgres,),
        url=postgres_url,
        make_at=make_at,
        applies_checks=True,
    )
]
