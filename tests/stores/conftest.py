from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from ratekeeper.stores import AsyncStore, Store

from .backends import Backend, all_backends


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
