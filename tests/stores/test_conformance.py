"""The one behavioural suite for every store: ratekeeper's public conformance kit
(`ratekeeper.testing.conformance.StoreConformance`, what a third-party store author runs), run here
against every backend of tests/stores/backends — traces replayed against the pure reference,
decisions compared field by field, exactness under threads and tasks. A backend whose server is
missing fails, never skips."""

from __future__ import annotations

from typing import Any

import pytest

from ratekeeper.stores import AsyncStore, Store
from ratekeeper.testing.conformance import StoreConformance

from .backends import Backend, all_backends


def conformance_class(backend: Backend) -> type[StoreConformance]:
    """A ``Test<Backend>`` subclass of the kit that builds ``backend``'s stores."""

    def make_store(self: Any) -> Store:
        return backend.make_sync()

    def make_async_store(self: Any) -> AsyncStore:
        return backend.make_async()

    name = "Test" + "".join(part.title() for part in backend.name.split("_"))
    marks: list[pytest.MarkDecorator] = list(backend.marks)
    return type(
        name,
        (StoreConformance,),
        {
            "make_store": make_store,
            "make_async_store": make_async_store,
            "pytestmark": marks,
            "applies_checks": backend.applies_checks,
        },
    )


for _backend in all_backends():
    _class = conformance_class(_backend)
    globals()[_class.__name__] = _class
