"""Stores by URL scheme. Client libraries are imported only when their scheme is used."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from ratekeeper.errors import ConfigError
from ratekeeper.stores.base import AsyncStore, Rule, Store

__all__ = [
    "AsyncStore",
    "Rule",
    "Store",
    "async_store_from_url",
    "check_store_url",
    "store_from_url",
]

# scheme -> (module, sync class, async class, extra to install)
_SCHEMES: dict[str, tuple[str, str, str, str]] = {
    "memory": ("ratekeeper.stores.memory", "MemoryStore", "AsyncMemoryStore", ""),
    "redis": ("ratekeeper.stores.redis", "RedisStore", "AsyncRedisStore", "redis"),
    "rediss": ("ratekeeper.stores.redis", "RedisStore", "AsyncRedisStore", "redis"),
    "unix": ("ratekeeper.stores.redis", "RedisStore", "AsyncRedisStore", "redis"),
    "redis+cluster": ("ratekeeper.stores.redis", "RedisStore", "AsyncRedisStore", "redis"),
    "redis+sentinel": ("ratekeeper.stores.redis", "RedisStore", "AsyncRedisStore", "redis"),
    "postgresql": ("ratekeeper.stores.postgres", "PostgresStore", "AsyncPostgresStore", "postgres"),
    "postgres": ("ratekeeper.stores.postgres", "PostgresStore", "AsyncPostgresStore", "postgres"),
    "nats": ("ratekeeper.stores.nats", "NatsStore", "AsyncNatsStore", "nats"),
    "dynamodb": ("ratekeeper.stores.dynamodb", "DynamoDBStore", "AsyncDynamoDBStore", "dynamodb"),
}


def _store_class(url: str, index: int) -> Any:
    if not isinstance(url, str):
        raise ConfigError(f"store must be a URL string or a store object, got {url!r}")
    scheme = urlsplit(url).scheme.lower()
    entry = _SCHEMES.get(scheme)
    if entry is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigError(f"unknown store URL scheme in {url!r}; known schemes: {known}")
    module_name, extra = entry[0], entry[3]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with `pip install ratekeeper[{extra}]`" if extra else ""
        raise ConfigError(f"the store for {scheme}:// is not available ({exc}){hint}") from exc
    return getattr(module, entry[index])


def check_store_url(url: str) -> None:
    """Raise `ConfigError` unless ``url`` names a known scheme whose client library imports."""
    _store_class(url, 1)


def store_from_url(url: str, **options: Any) -> Store:
    """Build a synchronous store from a URL such as ``memory://`` or ``redis://host:6379/0``."""
    store: Store = _store_class(url, 1).from_url(url, **options)
    return store


def async_store_from_url(url: str, **options: Any) -> AsyncStore:
    """Build an asyncio store from a URL."""
    store: AsyncStore = _store_class(url, 2).from_url(url, **options)
    return store
