"""NATS-specific behaviour: URLs, key encoding, the bucket and its TTL, the CAS loop under
contention across processes, a private nats-server stopped and restarted mid-run, bad
credentials and hosts. The behaviour every store shares is in test_conformance.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ratekeeper import AsyncRateLimiter, RateLimiter, StoreUnavailable
from ratekeeper.errors import ConfigError
from ratekeeper.stores import async_store_from_url, store_from_url
from ratekeeper.stores.nats import AsyncNatsStore, NatsStore, kv_key
from ratekeeper.testing import FakeClock

from .backends.nats import nats_url
from .test_postgres import run_contention

pytestmark = pytest.mark.nats


def bucket() -> str:
    return f"rkt_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def url() -> str:
    return nats_url()


class PrivateServer:
    """A nats-server of this test only, with JetStream on a folder that outlives restarts."""

    def __init__(self, folder: Path, *extra: str) -> None:
        binary = os.environ.get("RATEKEEPER_NATS_SERVER_BIN")
        if not binary:
            pytest.fail("RATEKEEPER_NATS_SERVER_BIN is not set: run the tests with scripts/test")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.folder / "nats.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.folder / "js"),
                *self.extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None, "nats-server exited at start"
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # graceful: JetStream flushes its files
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    with tempfile.TemporaryDirectory(prefix="rk-nats-") as folder:
        server = PrivateServer(Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.stop()


# --------------------------------------------------------------------------- URLs, keys, bucket


def test_urls_and_options(url: str) -> None:
    name = bucket()
    store = store_from_url(f"{url}?bucket={name}&ttl=120&max_retries=9&timeout=0.25")
    assert isinstance(store, NatsStore)
    assert (store.aio.bucket, store.aio.ttl, store.aio.max_retries) == (name, 120.0, 9)
    store.ping()
    store.close()
    multi = AsyncNatsStore.from_url("nats://u:p%40ss@h1:4222,h2:4223")
    assert multi.servers == ["nats://h1:4222", "nats://h2:4223"]
    assert multi._connect_options == {"user": "u", "password": "p@ss"}
    with pytest.raises(ConfigError):
        NatsStore.from_url(f"{url}?nonsense=1")
    with pytest.raises(ConfigError):
        AsyncNatsStore.from_url(url, bucket="bad.name")


def test_kv_keys_are_valid_and_distinct() -> None:
    keys = ["", "a", "a:", "é ☃", "\x00", "x" * 5000, "x" * 5001, "/", ".", "k" + "a" * 10]
    names = [kv_key(k) for k in keys]
    assert len(set(names)) == len(keys)
    for name in names:
        assert re.fullmatch(r"[-/_=.a-zA-Z0-9]+", name), name
        assert len(name) <= 201
    assert kv_key("x" * 5000).startswith("h")


async def test_bucket_created_with_ttl_and_one_entry_per_key(url: str) -> None:
    name = bucket()
    store = AsyncNatsStore.from_url(url, bucket=name, ttl=90)
    clock = FakeClock(1000.0)
    limiter = AsyncRateLimiter("2/second;5/minute", store=store, clock=clock, max_concurrent=2)
    async with limiter.acquire("user:1"):
        kv = await store._bucket()
        status = await kv.status()
        assert status.bucket == name and status.ttl == pytest.approx(90)
        doc = json.loads(await store.get_raw("user:1") or b"{}")
        # every limit of the key and its leases live in one entry: one CAS updates them all
        assert set(doc["s"]) == {"token_bucket:2-per-1s", "token_bucket:5-per-60s"}
        assert len(doc["l"]) == 1
    await store.close()


def test_expired_states_are_dropped_on_write(url: str) -> None:
    store = NatsStore.from_url(url, bucket=bucket())
    clock = FakeClock(1000.0)
    short = RateLimiter("1/second", store=store, clock=clock)
    long = RateLimiter("1/hour", store=store, clock=clock)
    assert short.hit("k").allowed and long.hit("k").allowed
    clock.advance(5)
    assert not long.hit("k").allowed
    assert long.peek("k", 0).allowed  # cost 0 passes, writes nothing
    RateLimiter("1/day", store=store, clock=clock).hit("k")
    doc = json.loads(store.get_raw("k") or b"{}")
    assert set(doc["s"]) == {"token_bucket:1-per-3600s", "token_bucket:1-per-86400s"}
    store.close()


def test_caller_clock_is_the_time_source(url: str) -> None:
    store = NatsStore.from_url(url, bucket=bucket())
    clock = FakeClock(1000.0)
    limiter = RateLimiter("1/hour", store=store, clock=clock)
    assert limiter.hit("k").allowed and not limiter.hit("k").allowed
    clock.advance(3600)
    assert limiter.hit("k").allowed
    store.close()


# --------------------------------------------------------------------------- contention


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["sliding_window"])
def test_processes_and_threads_admit_exactly_the_limit(url: str, algorithm: str) -> None:
    # generous request timeout and retries: the machine may be busy with other tests
    options = {"bucket": bucket(), "timeout": 3.0, "max_retries": 1000}
    NatsStore.from_url(url, **options).close()
    admitted, elapsed = run_contention(url, options, "100/day;150/7d", algorithm, hits=10)
    assert admitted == 100
    assert elapsed < 10


async def test_async_tasks_on_two_stores_admit_exactly_the_limit(url: str) -> None:
    name = bucket()
    stores = [AsyncNatsStore.from_url(url, bucket=name) for _ in range(3)]
    limiters = [AsyncRateLimiter("60/day", store=s) for s in stores]
    results = await asyncio.gather(*(limiters[i % 3].hit("hot") for i in range(300)))
    assert sum(d.allowed for d in results) == 60
    for s in stores:
        await s.close()


# --------------------------------------------------------------------------- failures


def test_server_restart_mid_run_falls_back_then_recovers(private_server: PrivateServer) -> None:
    store = NatsStore.from_url(private_server.url, bucket="restart")
    allow = RateLimiter("5/day", store=store, on_store_error="allow")
    deny = RateLimiter("1000/day", store=store, on_store_error="deny")
    assert all(allow.hit("k").allowed for _ in range(3))

    private_server.stop()
    for _ in range(5):
        for limiter, expect in ((allow, True), (deny, False)):
            t0 = time.monotonic()
            d = limiter.hit("probe")  # never raises: on_store_error decides
            assert d.fallback and d.allowed is expect
            assert time.monotonic() - t0 < 1.5

    private_server.start()
    deadline = time.monotonic() + 15
    while allow.hit("probe2").fallback:  # the client reconnects by itself
        assert time.monotonic() < deadline, "no recovery after the restart"
        time.sleep(0.05)
    decisions = [allow.hit("k") for _ in range(3)]  # the state survived the restart
    assert [(d.allowed, d.fallback) for d in decisions] == [(True, False)] * 2 + [(False, False)]
    store.close()


async def test_async_restart(private_server: PrivateServer) -> None:
    store = async_store_from_url(private_server.url + "?bucket=arestart")
    limiter = AsyncRateLimiter("3/day", store=store, on_store_error="deny")
    assert (await limiter.hit("k")).allowed
    private_server.stop()
    t0 = time.monotonic()
    d = await limiter.hit("k")
    assert d.fallback and not d.allowed and time.monotonic() - t0 < 1.5
    private_server.start()
    deadline = time.monotonic() + 15
    while (d := await limiter.hit("k")).fallback:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert d.allowed and d.remaining == 1
    await store.close()


def test_unreachable_host_is_unavailable_fast() -> None:
    store = NatsStore.from_url(f"nats://127.0.0.1:{free_port()}", connect_timeout=1.0)
    limiter = RateLimiter("5/second", store=store)
    for call in (store.ping, lambda: limiter.hit("k")):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="nats unavailable"):
            call()
        assert time.monotonic() - t0 < 2
    fallback = RateLimiter("5/second", store=store, on_store_error="allow").hit("k")
    assert fallback.fallback and fallback.allowed
    store.close()


def test_wrong_password_is_a_clear_error() -> None:
    with tempfile.TemporaryDirectory(prefix="rk-nats-") as folder:
        server = PrivateServer(Path(folder), "--user", "rk", "--pass", "right")
        server.start()
        try:
            bad = NatsStore.from_url(f"nats://rk:wrong@127.0.0.1:{server.port}")
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"(?i)authorization"):
                bad.ping()
            assert time.monotonic() - t0 < 3
            bad.close()
            good = NatsStore.from_url(f"nats://rk:right@127.0.0.1:{server.port}")
            assert RateLimiter("1/minute", store=good).hit("k").allowed
            good.close()
        finally:
            server.stop()


def test_closed_store_raises(url: str) -> None:
    store = NatsStore.from_url(url, bucket=bucket())
    store.ping()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreUnavailable):
        store.ping()


def test_other_connection_options_pass_through(url: str) -> None:
    store: Any = NatsStore.from_url(url, bucket=bucket(), name="ratekeeper-test")
    store.ping()
    assert store.aio._nc.options["name"] == "ratekeeper-test"
    store.close()
