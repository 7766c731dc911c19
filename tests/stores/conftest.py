from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ratekeeper.stores import AsyncStore, Store

from .backends import Backend, all_backends
from .backends.redis import node_ports


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=b.marks) for b in all_backends()])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.make_sync()
    yield s
    s.close()


@pytest.fixture
async def async_store(backend: Backend) -> AsyncIterator[AsyncStore]:
    s = backend.make_async()
    yield s
    await s.close()


@pytest.fixture
def nodes() -> Iterator[dict[int, Any]]:
    """A plain redis-py client per node of the test Redis Cluster (INFO, CLIENT LIST), by port."""
    import redis

    clients = {port: redis.Redis(port=port) for port in node_ports()}
    yield clients
    for client in clients.values():
        client.close()
