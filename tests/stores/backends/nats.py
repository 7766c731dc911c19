"""NATS backend of the conformance suite: the JetStream server started by ``scripts/test``
(``RATEKEEPER_NATS_URL``), one bucket per test session. NATS always uses the caller's clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

from ratekeeper.stores.nats import AsyncNatsStore, NatsStore

from . import Backend

BUCKET = f"rktest_{uuid.uuid4().hex[:10]}"


def nats_url() -> str:
    url = os.environ.get("RATEKEEPER_NATS_URL")
    if not url:
        pytest.fail(
            "RATEKEEPER_NATS_URL is not set: run the tests with scripts/test (or source the "
            "env file written by `scripts/services start DIR`)"
        )
    return url


# Behaviour tests, not latency tests: a generous deadline, so that a busy test machine cannot
# turn a slow answer into StoreUnavailable (the fault suites use the library's defaults: make_at).
PATIENT = {"timeout": 5.0}


def make_sync(**options: object) -> NatsStore:
    return NatsStore.from_url(nats_url(), **{"bucket": BUCKET, **PATIENT, **options})


def make_async(**options: object) -> AsyncNatsStore:
    return AsyncNatsStore.from_url(nats_url(), **{"bucket": BUCKET, **PATIENT, **options})


def make_at(url: str) -> tuple[Callable[[], NatsStore], Callable[[], AsyncNatsStore]]:
    """Stores at ``url`` (a FaultProxy) with the library's default timeouts (the fault suite)."""
    return (
        lambda: NatsStore.from_url(url, bucket=BUCKET),
        lambda: AsyncNatsStore.from_url(url, bucket=BUCKET),
    )


BACKENDS = [
    Backend(
        "nats",
        make_sync=make_sync,
        make_async=make_async,
        marks=(pytest.mark.nats,),
        url=nats_url,
        make_at=make_at,
        applies_checks=True,
    )
]
