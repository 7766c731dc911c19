"""The public store conformance kit, run against the memory store exactly as a third-party store
author would run it (tests/stores/ runs the same behaviours against every server-backed store)."""

from __future__ import annotations

from ratekeeper.stores import AsyncStore, Store
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore
from ratekeeper.testing.conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    def make_store(self) -> Store:
        return MemoryStore()

    def make_async_store(self) -> AsyncStore:
        return AsyncMemoryStore()
