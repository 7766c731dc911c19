"""Redis standalone, Cluster and Sentinel, from the servers scripts/test starts.

The stores trust the caller's clock (``time_source="client"``) so that FakeClock traces replay
exactly, and use a random key prefix per store. A missing server URL fails the tests, never
skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

from ratekeeper.stores.redis import AsyncRedisStore, RedisStore

from . import Backend


def env_url(name: str) -> str:
    url = os.environ.get(name)
    if not url:
        pytest.fail(
            f"{name} is not set: run the tests with scripts/test, or start the servers with "
            "`scripts/services start DIR && source DIR/env`",
            pytrace=False,
        )
    return url


# Behaviour tests, not latency tests: generous timeouts so that a busy test machine cannot turn
# a slow reply into StoreUnavailable. (test_redis.py tests the short defaults.)
PATIENT = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "pool_timeout": 5.0}


def _factory(var: str) -> tuple[object, object]:
    def make_sync() -> RedisStore:
        prefix = f"rktest:{uuid.uuid4().hex[:12]}"
        return RedisStore.from_url(env_url(var), prefix=prefix, time_source="client", **PATIENT)

    def make_async() -> AsyncRedisStore:
        prefix = f"rktest:{uuid.uuid4().hex[:12]}"
        return AsyncRedisStore.from_url(
            env_url(var), prefix=prefix, time_source="client", **PATIENT
        )

    return make_sync, make_async


def make_at(url: str) -> tuple[Callable[[], RedisStore], Callable[[], AsyncRedisStore]]:
    """Stores at ``url`` (a FaultProxy) with the library's default timeouts (the fault suite)."""
    return (
        lambda: RedisStore.from_url(url, prefix=f"rktest:{uuid.uuid4().hex[:12]}"),
        lambda: AsyncRedisStore.from_url(url, prefix=f"rktest:{uuid.uuid4().hex[:12]}"),
    )


BACKENDS = [
    Backend(name, *_factory(var), marks=(pytest.mark.redis,), applies_checks=True)  # type: ignore[arg-type]
    for name, var in [
        ("redis", "RATEKEEPER_REDIS_URL"),
        ("redis_cluster", "RATEKEEPER_REDIS_CLUSTER_URL"),
        ("redis_sentinel", "RATEKEEPER_REDIS_SENTINEL_URL"),
    ]
]
# Standalone Redis is the one whose traffic a FaultProxy can carry (tests/stores/test_faults.py).
BACKENDS[0].url = lambda: env_url("RATEKEEPER_REDIS_URL")
BACKENDS[0].make_at = make_at


def node_ports() -> list[int]:
    """The ports of the test Redis Cluster's nodes."""
    hosts = env_url("RATEKEEPER_REDIS_CLUSTER_URL").removeprefix("redis+cluster://").split(",")
    return [int(host.rsplit(":", 1)[1]) for host in hosts]
