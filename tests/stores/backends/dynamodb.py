"""DynamoDB backend of the conformance suite: moto's server mode started by ``scripts/test``
(``RATEKEEPER_DYNAMODB_URL``), a fresh table per store (``create_table``, as ``ratekeeper
migrate`` does). DynamoDB always uses the caller's clock.

The store module is imported when a store is built, not when the suite is collected: the Redis
matrix of ``scripts/test`` collects this package in venvs without the dynamodb extra.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from ratekeeper.stores import AsyncStore, Store

from . import Backend


def dynamodb_url(table: str | None = None) -> str:
    """The server's URL, naming ``table`` (default: the URL's own)."""
    url = os.environ.get("RATEKEEPER_DYNAMODB_URL")
    if not url:
        pytest.fail(
            "RATEKEEPER_DYNAMODB_URL is not set: run the tests with scripts/test (or source the "
            "env file written by `scripts/services start DIR`)",
            pytrace=False,
        )
    if table is None:
        return url
    return urlunsplit(urlsplit(url)._replace(path=f"/{table}"))


def new_table(endpoint_url: str | None = None) -> str:
    """A fresh table (created now); returns its URL, at ``endpoint_url`` when given (a FaultProxy
    in front of the server: the table is created through the server's own address)."""
    from ratekeeper.stores.dynamodb import DynamoDBStore

    url = dynamodb_url(f"rktest-{uuid.uuid4().hex[:12]}")
    store = DynamoDBStore.from_url(url, timeout=10.0)
    try:
        store.create_table()
    finally:
        store.close()
    if endpoint_url is None:
        return url
    return urlunsplit(urlsplit(url)._replace(query=urlencode({"endpoint_url": endpoint_url})))


def endpoint() -> str:
    """The server's endpoint URL (``http://127.0.0.1:PORT``), for the fault suite's proxy."""
    return dict(parse_qsl(urlsplit(dynamodb_url()).query))["endpoint_url"]


# Behaviour tests, not latency tests: a generous deadline, so that a busy test machine cannot turn
# a slow reply into StoreUnavailable, and 400 tasks on one key take turns at one round trip each
# (test_dynamodb.py and the fault suite test the defaults).
PATIENT = {"timeout": 30.0}


def make_sync(**options: Any) -> Store:
    from ratekeeper.stores.dynamodb import DynamoDBStore

    return DynamoDBStore.from_url(new_table(), **{**PATIENT, **options})


def make_async(**options: Any) -> AsyncStore:
    from ratekeeper.stores.dynamodb import AsyncDynamoDBStore

    return AsyncDynamoDBStore.from_url(new_table(), **{**PATIENT, **options})


def make_at(endpoint_url: str) -> tuple[Callable[[], Store], Callable[[], AsyncStore]]:
    """Stores reaching the server at ``endpoint_url`` (a FaultProxy) with the library's default
    timeouts (the fault suite)."""
    from ratekeeper.stores.dynamodb import AsyncDynamoDBStore, DynamoDBStore

    url = new_table(endpoint_url)
    return (lambda: DynamoDBStore.from_url(url), lambda: AsyncDynamoDBStore.from_url(url))


BACKENDS = [
    Backend(
        "dynamodb",
        make_sync=make_sync,
        make_async=make_async,
        marks=(pytest.mark.dynamodb,),
        url=endpoint,
        make_at=make_at,
        applies_checks=True,
    )
]
