"""NATS reconnect attempts close their sockets.

nats-py's ``TcpTransport.connect`` overwrites the previous attempt's stream writer without closing
it. On a half-closed link every reconnect attempt connects, reads EOF before the server's INFO
and fails, so the store leaked one socket per attempt (every ``reconnect_time_wait``), each
found later by the garbage collector with a ``ResourceWarning`` (an error under this suite's
``filterwarnings``: test_faults.py's ``nats-half_close`` case failed at random). The synchronous
store drives the same asyncio client on its own loop.
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from urllib.parse import urlsplit

import pytest

from ratekeeper import AsyncRateLimiter, StoreUnavailable
from ratekeeper.stores.nats import AsyncNatsStore
from tests.faultproxy import FaultProxy

from .backends.nats import nats_url

pytestmark = pytest.mark.nats

OUTAGE = 1.5  # seconds of half-closed link: several reconnect attempts (one every 0.25 s)
RECOVERY_BOUND = 5.0  # seconds after the link heals within which decisions are real again
POLL = 0.05  # seconds between decisions while waiting


async def test_failed_reconnect_attempts_leave_no_socket_open() -> None:
    server = urlsplit(nats_url())
    assert server.hostname is not None and server.port is not None
    with FaultProxy(server.hostname, server.port) as proxy:
        store = AsyncNatsStore.from_url(f"nats://{proxy.host}:{proxy.port}", bucket="leak")
        limiter = AsyncRateLimiter("100000/second", store=store, on_store_error="raise")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            assert not (await limiter.hit("k")).fallback
            proxy.set_mode("half_close")
            failures = 0
            end = time.monotonic() + OUTAGE
            while time.monotonic() < end:
                try:
                    await limiter.hit("k")
                except StoreUnavailable:
                    failures += 1
                await asyncio.sleep(POLL)
            assert failures  # the outage was seen
            proxy.set_mode("pass")
            end = time.monotonic() + RECOVERY_BOUND
            while True:
                try:
                    await limiter.hit("k")
                    break
                except StoreUnavailable:
                    assert time.monotonic() < end, "no recovery"
                    await asyncio.sleep(POLL)
            await store.close()
            gc.collect()  # an unclosed writer warns when it is collected
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not leaks
