"""The registry layer: it owns stores and the limiters built on them.

Integrations and (later) named limiters never build a store themselves: they ask a `Registry`.

- :class:`StorePair` is one store as both faces: given a URL it builds the synchronous store and
  the asyncio one on first use (each opens its own connections to the same server, so they share
  state); given a memory store, the two faces share one dict; given a store object, only that face
  exists and asking for the other is a `ConfigError` naming it. It closes what it built.
- :class:`Registry` holds one memory store shared by everything that uses it without a store, the
  store pairs it built, and a bounded cache of limiters keyed by what makes them differ (kind,
  store, algorithm, limits, options), so a dynamic limit costs a dict lookup, not a limiter.

A bad URL, an unknown scheme or a missing client library raises `ConfigError` when the pair is
made (at configuration time), never at the first request.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Hashable
from typing import Any

from ratekeeper.errors import ConfigError
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter
from ratekeeper.limits import Limit
from ratekeeper.stores import (
    AsyncStore,
    Store,
    async_store_from_url,
    check_store_url,
    store_from_url,
)
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore

__all__ = ["DEFAULT_MAX_LIMITERS", "Registry", "StorePair", "StoreSpec"]

log = logging.getLogger("ratekeeper")

StoreSpec = str | Store | AsyncStore | None
DEFAULT_MAX_LIMITERS = 1024


class StorePair:
    """One store, as a synchronous and an asyncio face (see the module docstring)."""

    def __init__(self, spec: StoreSpec, *, memory: MemoryStore | None = None) -> None:
        self.spec = spec
        self.url: str | None = None
        self._sync: Store | None = None
        self._async: AsyncStore | None = None
        self._owned: list[Any] = []  # what this pair built, and so closes
        self._lock = threading.Lock()
        if spec is None or (isinstance(spec, str) and spec.lower().startswith("memory:")):
            if isinstance(spec, str):
                check_store_url(spec)
            shared = memory if memory is not None else MemoryStore()
            self._sync, self._async = shared, AsyncMemoryStore(shared)
        elif isinstance(spec, str):
            check_store_url(spec)
            self.url = spec
        elif isinstance(spec, MemoryStore):
            self._sync, self._async = spec, AsyncMemoryStore(spec)
        elif isinstance(spec, AsyncMemoryStore):
            self._sync, self._async = spec.sync, spec
        elif inspect.iscoroutinefunction(getattr(spec, "hit", None)):
            self._async = spec  # type: ignore[assignment]
        elif isinstance(spec, Store):
            self._sync = spec
        else:
            raise ConfigError(f"store must be a URL or a store object, got {spec!r}")

    def sync(self) -> Store:
        """The synchronous face (built from the URL on first use)."""
        store = self._sync
        if store is None:
            with self._lock:
                if self._sync is None:
                    if self.url is None:
                        raise ConfigError(
                            f"store {self.spec!r} is an asyncio store; this needs a synchronous "
                            "store (or a URL)"
                        )
                    self._sync = store_from_url(self.url)
                    self._owned.append(self._sync)
                store = self._sync
        return store

    def async_(self) -> AsyncStore:
        """The asyncio face (built from the URL on first use, inside the running loop)."""
        store = self._async
        if store is None:
            with self._lock:
                if self._async is None:
                    if self.url is None:
                        raise ConfigError(
                            f"store {self.spec!r} is synchronous; this needs an asyncio store "
                            "(or a URL)"
                        )
                    self._async = async_store_from_url(self.url)
                    self._owned.append(self._async)
                store = self._async
        return store

    def close(self) -> None:
        """Close the synchronous store this pair built (the asyncio one needs :meth:`aclose`)."""
        for store in self._owned:
            if isinstance(store, Store) and not inspect.iscoroutinefunction(store.close):
                store.close()
                self._forget(store)

    async def aclose(self) -> None:
        """Close every store this pair built."""
        for store in list(self._owned):
            result = store.close()
            if inspect.isawaitable(result):
                await result
            self._forget(store)

    def _forget(self, store: Any) -> None:
        self._owned.remove(store)
        if store is self._sync:
            self._sync = None
        if store is self._async:
            self._async = None


class Registry:
    """Stores and limiters for one application (several registries never share state)."""

    def __init__(self, *, max_limiters: int = DEFAULT_MAX_LIMITERS) -> None:
        if isinstance(max_limiters, bool) or not isinstance(max_limiters, int) or max_limiters < 1:
            raise ConfigError(f"max_limiters must be a positive integer, got {max_limiters!r}")
        self.memory = MemoryStore()
        self.max_limiters = max_limiters
        self._lock = threading.Lock()
        self._limiters: dict[Hashable, RateLimiter | AsyncRateLimiter] = {}
        self._warned = False

    def store(self, spec: StoreSpec = None) -> StorePair:
        """The store for ``spec``: this registry's memory store for ``None``, else a new pair."""
        return StorePair(spec, memory=self.memory)

    def limiter(
        self,
        store: StorePair,
        limits: tuple[Limit, ...],
        *,
        asynchronous: bool,
        **options: Any,
    ) -> RateLimiter | AsyncRateLimiter:
        """The cached limiter for ``limits`` on ``store`` with these options (built once)."""
        cache_key = (store, asynchronous, limits, tuple(sorted(options.items())))
        found = self._limiters.get(cache_key)
        if found is not None:
            return found
        with self._lock:
            found = self._limiters.get(cache_key)
            if found is None:
                if len(self._limiters) >= self.max_limiters:
                    if not self._warned:
                        self._warned = True
                        log.warning(
                            "ratekeeper: more than %d distinct limits; the oldest limiters are "
                            "rebuilt when used again",
                            self.max_limiters,
                        )
                    self._limiters.pop(next(iter(self._limiters)))
                if asynchronous:
                    found = AsyncRateLimiter(limits, store=store.async_(), **options)
                else:
                    found = RateLimiter(limits, store=store.sync(), **options)
                self._limiters[cache_key] = found
        return found
