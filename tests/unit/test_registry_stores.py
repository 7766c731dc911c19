"""The registry owns stores: one memory store per registry, sync/async faces, a limiter cache."""

from __future__ import annotations

import pytest

from ratekeeper import ConfigError, Limit
from ratekeeper.registry import Registry, StorePair
from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore
from ratekeeper.testing import FakeClock

LIMITS = (Limit(2, per=60),)


async def test_sync_and_async_faces_share_the_registry_memory_store() -> None:
    registry = Registry()
    clock = FakeClock()
    pair = registry.store()
    sync = registry.limiter(pair, LIMITS, asynchronous=False, clock=clock)
    asyncio_face = registry.limiter(pair, LIMITS, asynchronous=True, clock=clock)
    assert sync.hit("k")  # type: ignore[union-attr]
    assert await asyncio_face.hit("k")  # type: ignore[misc]
    assert not sync.hit("k")  # the budget of 2 is one budget
    assert registry.store().sync() is pair.sync() is registry.memory


def test_two_registries_never_share_state() -> None:
    a, b = Registry(), Registry()
    la = a.limiter(a.store(), LIMITS, asynchronous=False)
    lb = b.limiter(b.store(), LIMITS, asynchronous=False)
    assert la.hit("k") and la.hit("k") and not la.hit("k")  # type: ignore[union-attr]
    assert lb.hit("k")  # type: ignore[union-attr]


def test_limiters_are_built_once_per_distinct_definition() -> None:
    registry = Registry()
    pair = registry.store()
    first = registry.limiter(pair, LIMITS, asynchronous=False, algorithm="gcra")
    assert registry.limiter(pair, LIMITS, asynchronous=False, algorithm="gcra") is first
    assert registry.limiter(pair, LIMITS, asynchronous=False, algorithm="token_bucket") is not first
    assert registry.limiter(pair, LIMITS, asynchronous=True, algorithm="gcra") is not first


def test_the_limiter_cache_is_bounded() -> None:
    registry = Registry(max_limiters=3)
    pair = registry.store()
    built = [registry.limiter(pair, (Limit(n, per=1),), asynchronous=False) for n in range(1, 6)]
    assert len(registry._limiters) == 3
    assert registry.limiter(pair, (Limit(5, per=1),), asynchronous=False) is built[-1]


@pytest.mark.parametrize("url", ["mongo+weird://x", "http://example.com", "memory-ish"])
def test_a_bad_store_url_fails_when_the_pair_is_made(url: str) -> None:
    with pytest.raises(ConfigError, match="scheme"):
        StorePair(url)


def test_an_object_gives_only_its_own_face() -> None:
    sync_only = StorePair(MemoryStore())
    assert isinstance(sync_only.async_(), AsyncMemoryStore)  # a memory store has both
    from ratekeeper.stores.base import Rule

    class SyncOnly(MemoryStore):
        pass

    class AsyncOnly:
        async def hit(self, key: str, rule: Rule, cost: float, now: float) -> None: ...

    assert isinstance(StorePair(SyncOnly()).sync(), SyncOnly)
    with pytest.raises(ConfigError, match="asyncio store"):
        StorePair(AsyncOnly()).sync()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="store must be"):
        StorePair(42)  # type: ignore[arg-type]
