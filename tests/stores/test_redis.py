"""Redis-specific behaviour: URLs and clients, keys and TTLs, server time, script reloading,
failures and recovery, Lua against the Python reference. The behaviour every store shares is in
test_conformance.py."""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from ratekeeper import (
    AsyncRateLimiter,
    ConfigError,
    Limit,
    RateLimiter,
    StoreUnavailable,
)
from ratekeeper.algorithms import ALGORITHMS, evaluate
from ratekeeper.decision import Decision
from ratekeeper.stores import async_store_from_url, store_from_url
from ratekeeper.stores.base import Rule
from ratekeeper.stores.redis import AsyncRedisStore, RedisStore, _core
from ratekeeper.stores.redis._core import LIMIT_SCRIPTS
from ratekeeper.testing import FakeClock

from .backends.redis import PATIENT, env_url
from .test_ports import assert_exactly, replay

pytestmark = pytest.mark.redis
ORIGINAL_DEFAULTS = dict(_core.DEFAULTS)


@pytest.fixture(autouse=True)
def patient_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores on the shared servers get generous timeouts (a busy machine must not make these
    behaviour tests flaky); the fault tests pass short ones explicitly."""
    for name, value in PATIENT.items():
        monkeypatch.setitem(_core.DEFAULTS, name, value)


def test_default_timeouts_are_short() -> None:
    assert ORIGINAL_DEFAULTS == {
        "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5,
        "retries": 1,
        "max_connections": 64,
        "pool_timeout": 0.5,
    }


def prefix() -> str:
    return f"rktest:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url() -> str:
    return env_url("RATEKEEPER_REDIS_URL")


@pytest.fixture
def raw(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def server_store(url: str) -> Iterator[RedisStore]:
    """A store on the shared server with the default server time."""
    store = RedisStore.from_url(url, prefix=prefix())
    yield store
    store.close()


# --------------------------------------------------------------------------- URLs and clients


def test_from_url_standalone(url: str) -> None:
    store = store_from_url(url, prefix=prefix())
    assert isinstance(store, RedisStore)
    store.ping()
    limiter = RateLimiter("2/minute", store=store)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    store.close()


def test_from_url_cluster_and_sentinel() -> None:
    for var in ("RATEKEEPER_REDIS_CLUSTER_URL", "RATEKEEPER_REDIS_SENTINEL_URL"):
        store = store_from_url(env_url(var), prefix=prefix())
        assert isinstance(store, RedisStore)
        limiter = RateLimiter("2/minute;5/hour", store=store)
        assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False], var
        store.close()


def test_limiter_accepts_the_url(url: str) -> None:
    with RateLimiter("1/minute", store=url) as limiter:
        key = uuid.uuid4().hex
        assert limiter.hit(key).allowed
        assert not limiter.hit(key).allowed


def test_custom_algorithm_without_lua_fails_at_construction(url: str) -> None:
    class Doubled(type(ALGORITHMS["gcra"])):  # type: ignore[misc]
        name = "doubled_gcra"

    with pytest.raises(ConfigError, match="cannot run algorithm 'doubled_gcra'"):
        RateLimiter("1/minute", algorithm=Doubled(), store=RedisStore.from_url(url))


def test_url_forms_build_the_right_connections(tmp_path: Path) -> None:
    store = RedisStore.from_url("rediss://user:secret@example.invalid:6380/2", socket_timeout=0.2)
    client = store._wire.factory()  # type: ignore[misc]
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("example.invalid", 6380, 2)
    assert (kwargs["username"], kwargs["password"]) == ("user", "secret")
    assert kwargs["socket_timeout"] == 0.2 and kwargs["socket_connect_timeout"] == 5.0
    assert isinstance(pool, redis.BlockingConnectionPool) and pool.max_connections == 64
    client.close()

    store = RedisStore.from_url(f"unix://{tmp_path}/redis.sock?db=3")
    client = store._wire.factory()  # type: ignore[misc]
    assert client.connection_pool.connection_class is redis.UnixDomainSocketConnection
    assert client.connection_pool.connection_kwargs["path"] == f"{tmp_path}/redis.sock"
    client.close()

    astore = AsyncRedisStore.from_url("redis://127.0.0.1:1/0", max_connections=7)
    aclient = astore._wire.factory()  # type: ignore[misc]
    assert isinstance(aclient.connection_pool, redis.asyncio.BlockingConnectionPool)
    assert aclient.connection_pool.max_connections == 7


@pytest.mark.parametrize(
    "bad",
    [
        "redis+cluster://127.0.0.1:7000,127.0.0.1:x",
        "redis+cluster://127.0.0.1:7000/3",
        "redis+cluster://",
        "redis+cluster://127.0.0.1:7000?colour=blue",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/mymaster/x",
        "redis+sentinel://127.0.0.1:26379/a/1/2",
        "redis://127.0.0.1:6379/notadb",
        "redis://127.0.0.1:6379/0?socket_timeout=abc",
    ],
)
def test_bad_urls_raise_at_construction(bad: str) -> None:
    with pytest.raises(ConfigError):
        RedisStore.from_url(bad)
    with pytest.raises(ConfigError):
        RateLimiter("1/second", store=bad)


def test_bad_options_raise_at_construction(url: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        RedisStore.from_url(url, prefix="a{b")
    with pytest.raises(ConfigError, match="time_source"):
        RedisStore.from_url(url, time_source="local")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="retries"):
        RedisStore.from_url(url, retries=-1)
    with pytest.raises(ConfigError):
        RedisStore()
    with pytest.raises(ConfigError, match=r"redis\.asyncio"):
        AsyncRedisStore(client=redis.Redis())
    with pytest.raises(ConfigError, match="synchronous"):
        RedisStore(client=redis.asyncio.Redis())


def test_client_objects(url: str) -> None:
    client = redis.Redis.from_url(url)
    store = RedisStore(client=client, prefix=prefix())
    limiter = RateLimiter("1/minute", store=store)
    assert limiter.hit("k").allowed and not limiter.hit("k").allowed
    store.close()  # a client the user handed in is not closed, and the store still works
    assert client.ping()
    assert not limiter.hit("k").allowed
    client.close()

    cluster_url = env_url("RATEKEEPER_REDIS_CLUSTER_URL")
    host, port = cluster_url.removeprefix("redis+cluster://").split(",")[0].split(":")
    cluster = redis.cluster.RedisCluster(host=host, port=int(port))
    limiter = RateLimiter("1/minute;3/hour", store=RedisStore(client=cluster, prefix=prefix()))
    assert limiter.hit("k").allowed and not limiter.hit("k").allowed
    cluster.close()


async def test_async_client_objects(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    limiter = AsyncRateLimiter("1/minute", store=AsyncRedisStore(client=client, prefix=prefix()))
    assert (await limiter.hit("k")).allowed and not (await limiter.hit("k")).allowed
    await client.aclose()

    cluster_url = env_url("RATEKEEPER_REDIS_CLUSTER_URL")
    host, port = cluster_url.removeprefix("redis+cluster://").split(",")[0].split(":")
    cluster = redis.asyncio.cluster.RedisCluster(host=host, port=int(port))
    store = AsyncRedisStore(client=cluster, prefix=prefix())
    limiter = AsyncRateLimiter("1/minute;3/hour", store=store)
    assert (await limiter.hit("k")).allowed and not (await limiter.hit("k")).allowed
    await cluster.aclose()

    for var in ("RATEKEEPER_REDIS_CLUSTER_URL", "RATEKEEPER_REDIS_SENTINEL_URL"):
        astore = async_store_from_url(env_url(var), prefix=prefix())
        alimiter = AsyncRateLimiter("2/minute", store=astore)
        assert [(await alimiter.hit("k")).allowed for _ in range(3)] == [True, True, False]
        await astore.ping()
        await astore.close()


# --------------------------------------------------------------------------- keys and TTLs


def test_key_layout_ttl_and_escaping(url: str, raw: redis.Redis) -> None:
    p = prefix()
    store = RedisStore.from_url(url, prefix=p)
    limiter = RateLimiter("2/second;10/minute", store=store)
    limiter.hit("user:42")
    keys = sorted(raw.keys(f"{p}:*"))
    assert keys == [
        f"{p}:{{user:42}}:token_bucket:10-per-60s".encode(),
        f"{p}:{{user:42}}:token_bucket:2-per-1s".encode(),
    ]
    for key in keys:  # the state vanishes once fully replenished (plus a second of grace)
        assert 0 < raw.pttl(key) <= 61_000
    # braces, '#', long keys are hashed: the hash tag cannot be broken by user content
    for user_key in ["a}b", "{x}", "#abc", "é" * 101]:
        limiter.hit(user_key)
    tags = {k.split(b"{", 1)[1].split(b"}", 1)[0] for k in raw.keys(f"{p}:*")}
    hashed = {t for t in tags if t.startswith(b"#")}
    assert len(hashed) == 4 and all(len(t) == 33 for t in hashed)
    assert tags - hashed == {b"user:42"}
    limiter.reset("user:42")
    assert not raw.keys(f"{p}:{{user:42}}*")
    store.close()


def test_cluster_keys_of_one_decision_share_a_slot() -> None:
    p = prefix()
    store = RedisStore.from_url(env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=p)
    limiter = RateLimiter("2/second;10/minute;100/day", store=store, max_concurrent=2)
    with limiter.acquire("tenant{7}"):
        args = store.limit_command("tenant{7}", limiter.rule, 1, 0, True, b"")[1]
        keys = [*args[1 : 1 + args[0]], store.acquire_command("tenant{7}", "x", 1, 1, 0, b"")[1]]
        client = store._wire.client
        slots = {client.keyslot(key) for key in keys}
        assert len(slots) == 1
        assert client.execute_command("EXISTS", *keys) == 4
    limiter.reset("tenant{7}")
    assert client.execute_command("EXISTS", *keys) == 0
    store.close()


# --------------------------------------------------------------------------- server time


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_skewed_clocks_agree_with_server_time(url: str, algorithm: str) -> None:
    store = RedisStore.from_url(url, prefix=prefix())
    now = time.time()
    early = RateLimiter("5/minute", algorithm=algorithm, store=store, clock=FakeClock(now - 300))
    late = RateLimiter("5/minute", algorithm=algorithm, store=store, clock=FakeClock(now + 240))
    decisions = [limiter.hit("k") for _ in range(5) for limiter in (early, late)]
    assert sum(d.allowed for d in decisions) == 5
    assert all(d.allowed for d in decisions[:5])
    assert early.peek("k").retry_after == pytest.approx(late.peek("k").retry_after, abs=0.1)
    store.close()


def time_calls(raw: redis.Redis) -> int:
    """How many TIME commands the server has run, scripts' included."""
    return int(raw.info("commandstats").get("cmdstat_time", {}).get("calls", 0))


@pytest.mark.parametrize("time_source", ["server", "client"])
def test_a_script_reads_the_server_clock_once(url: str, raw: redis.Redis, time_source: str) -> None:
    """The deadline guard and the script's clock share one TIME reading (a second one cost
    about 3 µs a decision); with the caller's clock, only the guard reads it."""
    store = RedisStore.from_url(url, prefix=prefix(), time_source=time_source)  # type: ignore[arg-type]
    limiter = RateLimiter("100/minute", store=store, max_concurrent=5)
    assert limiter.hit("k")  # the store measured the server's clock: scripts carry a deadline
    assert store.server_clock.deadline(time.monotonic() + 1) != b""
    before = time_calls(raw)
    for _ in range(10):
        assert limiter.hit("k")
    permit = limiter.acquire("k")
    permit.release()
    # 10 hits, and the acquisition's hit, lease and release
    assert time_calls(raw) - before == 13
    store.close()


def test_client_time_source_uses_the_limiters_clock(url: str) -> None:
    store = RedisStore.from_url(url, prefix=prefix(), time_source="client")
    clock = FakeClock()
    limiter = RateLimiter("1/hour", algorithm="fixed_window", store=store, clock=clock)
    assert limiter.hit("k").allowed and not limiter.hit("k").allowed
    clock.advance(3600)
    assert limiter.hit("k").allowed
    store.close()


# --------------------------------------------------------------------------- scripts


def test_scripts_reload_after_script_flush(server_store: RedisStore, raw: redis.Redis) -> None:
    limiter = RateLimiter("3/minute", store=server_store)
    assert limiter.hit("k").remaining == 2
    raw.script_flush()
    assert not raw.script_exists(LIMIT_SCRIPTS["token_bucket"].sha)[0]
    assert limiter.hit("k").remaining == 1  # NOSCRIPT -> EVAL, state kept
    assert raw.script_exists(LIMIT_SCRIPTS["token_bucket"].sha)[0]
    assert limiter.hit("k").remaining == 0


async def test_async_scripts_reload_after_script_flush(url: str, raw: redis.Redis) -> None:
    store = AsyncRedisStore.from_url(url, prefix=prefix())
    limiter = AsyncRateLimiter("3/minute", algorithm="sliding_log", store=store)
    assert (await limiter.hit("k")).remaining == 2
    raw.script_flush()
    assert (await limiter.hit("k")).remaining == 1
    assert raw.script_exists(LIMIT_SCRIPTS["sliding_log"].sha)[0]
    await store.close()


def test_scripts_reload_on_every_cluster_node() -> None:
    store = RedisStore.from_url(env_url("RATEKEEPER_REDIS_CLUSTER_URL"), prefix=prefix())
    limiter = RateLimiter("3/minute", algorithm="gcra", store=store)
    keys = [f"user:{i}" for i in range(20)]  # spread over the three masters
    assert all(limiter.hit(k).remaining == 2 for k in keys)
    client = store._wire.client
    for node in client.get_primaries():
        client.execute_command("SCRIPT", "FLUSH", target_nodes=node)
    assert all(limiter.hit(k).remaining == 1 for k in keys)
    store.close()


@pytest.mark.parametrize("algorithm", ["gcra", "leaky_bucket"])
def test_lua_reads_a_gcra_state_of_older_versions(
    url: str, raw: redis.Redis, algorithm: str
) -> None:
    """Older versions kept the TAT as one double (8 bytes); it is now an exact pair (high, low),
    and an 8-byte state reads as (tat, 0), in Lua as in Python."""
    p = prefix()
    store = RedisStore.from_url(url, prefix=p, time_source="client")
    rule = Rule(algorithm, (Limit(10, per=1),))
    now = 1_700_000_000.123456
    store.hit("k", rule, 3, now)
    (name,) = raw.keys(f"{p}:*")
    high, _ = struct.unpack("<dd", raw.get(name))
    raw.set(name, struct.pack("<d", high), keepttl=True)
    state: Any = high
    for cost in (2, 0, 6, 5):
        now += 0.01
        got = store.hit("k", rule, cost, now)
        news, want = evaluate(rule.algorithm, rule.limits, [state], now, cost)
        assert_exactly(got, want, f"cost {cost}")
        if news is not None:
            state = news[0]
    store.close()


def test_infinite_retry_after_when_cost_exceeds_capacity(server_store: RedisStore) -> None:
    for algorithm in ALGORITHMS:
        limiter = RateLimiter("3/minute", algorithm=algorithm, store=server_store)
        denied = limiter.hit("k", cost=4)
        assert not denied.allowed and denied.retry_after == math.inf, algorithm
        assert limiter.hit("k", cost=3).allowed, algorithm


# --------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("pipelining", [True, False])
async def test_async_200_tasks_admit_exactly_the_limit(url: str, pipelining: bool) -> None:
    # a small pool: the tasks wait for a free connection, none fails
    store = AsyncRedisStore.from_url(url, prefix=prefix(), max_connections=4, pipelining=pipelining)
    for limits in ("50/hour", "50/hour;60/day"):
        for algorithm in ALGORITHMS:
            limiter = AsyncRateLimiter(limits, algorithm=algorithm, store=store)
            key = uuid.uuid4().hex
            results = await asyncio.gather(*(limiter.hit(key) for _ in range(200)))
            assert sum(d.allowed for d in results) == 50, (limits, algorithm)
            assert not any(d.fallback for d in results)
    await store.close()


def test_threads_share_a_small_pool(url: str) -> None:
    store = RedisStore.from_url(url, prefix=prefix(), max_connections=2)
    limiter = RateLimiter("100/hour", algorithm="sliding_window", store=store)
    admitted: list[int] = []

    def worker() -> None:
        admitted.append(sum(limiter.hit("k").allowed for _ in range(50)))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 100
    store.close()


def test_leases_with_server_time(server_store: RedisStore) -> None:
    limiter = RateLimiter("100/second", store=server_store, max_concurrent=2, lease_ttl=0.3)
    first = limiter.acquire("job")
    with limiter.acquire("job"), pytest.raises(TimeoutError):
        limiter.acquire("job", timeout=0.05)
    with limiter.acquire("job", timeout=1):  # the second slot came back
        pass
    # the first holder "died": its lease expires after lease_ttl
    start = time.monotonic()
    with limiter.acquire("job", timeout=1), limiter.acquire("job", timeout=1):
        pass
    assert time.monotonic() - start < 0.6
    first.release()


# --------------------------------------------------------------------------- failures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own, to stop and restart."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.password = password
        self.extra = ("--requirepass", password) if password else ()
        self.binary = env_url("RATEKEEPER_REDIS_SERVER_BIN")
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(
                    port=self.port, password=self.password, socket_connect_timeout=0.2
                ) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.frozen:
                self.thaw()
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    frozen = False

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets (the kernel still accepts) but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_down_and_back(private_redis: PrivateRedis) -> None:
    store = RedisStore.from_url(private_redis.url)
    allow = RateLimiter("3/minute", store=store, on_store_error="allow")
    deny = RateLimiter("3/minute", algorithm="sliding_window", store=store, on_store_error="deny")
    strict = RateLimiter("3/minute", store=store)
    assert [allow.hit("a").allowed for _ in range(4)] == [True, True, True, False]
    assert [deny.hit("d").allowed for _ in range(4)] == [True, True, True, False]

    private_redis.stop()
    start = time.monotonic()
    for _ in range(20):
        d = allow.hit("a")
        assert d.allowed and d.fallback
        d = deny.hit("d")
        assert not d.allowed and d.fallback
        assert allow.peek("a").fallback
    assert time.monotonic() - start < 1.0  # a dead Redis answers fast
    with pytest.raises(StoreUnavailable):
        strict.hit("s")
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        strict.reset("s")

    private_redis.start()  # an empty server: no state, no scripts
    d = allow.hit("a")
    assert d.allowed and not d.fallback and d.remaining == 2
    assert [deny.hit("d").allowed for _ in range(4)] == [True, True, True, False]
    assert not deny.hit("d").fallback
    store.ping()
    store.close()


async def test_async_redis_down_and_back(private_redis: PrivateRedis) -> None:
    store = AsyncRedisStore.from_url(private_redis.url)
    allow = AsyncRateLimiter("3/minute", store=store, on_store_error="allow")
    deny = AsyncRateLimiter("3/minute", algorithm="gcra", store=store, on_store_error="deny")
    assert [(await allow.hit("a")).allowed for _ in range(4)] == [True, True, True, False]

    private_redis.stop()
    start = time.monotonic()
    results = await asyncio.gather(*(allow.hit("a") for _ in range(100)))
    assert all(d.allowed and d.fallback for d in results)
    results = await asyncio.gather(*(deny.hit("d") for _ in range(100)))
    assert all(not d.allowed and d.fallback for d in results)
    assert time.monotonic() - start < 1.0
    with pytest.raises(StoreUnavailable):
        await store.ping()

    private_redis.start()
    d = await allow.hit("a")
    assert d.allowed and not d.fallback and d.remaining == 2
    assert [(await deny.hit("d")).allowed for _ in range(4)] == [True, True, True, False]
    await store.close()


def test_authentication_failures_are_store_unavailable(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, password="s3cret")
    server.start()
    try:
        for url in (server.url, server.url.replace("redis://", "redis://:wrong@")):
            store = RedisStore.from_url(url)
            limiter = RateLimiter("1/minute", store=store, on_store_error="deny")
            d = limiter.hit("k")
            assert not d.allowed and d.fallback, url
            with pytest.raises(StoreUnavailable, match=r"(?i)auth"):
                store.ping()
            store.close()
        store = RedisStore.from_url(server.url.replace("redis://", "redis://:s3cret@"))
        limiter = RateLimiter("1/minute", store=store, on_store_error="deny")
        assert limiter.hit("k").allowed and not limiter.hit("k").fallback
        store.close()
    finally:
        server.stop()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(100)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_redis_times_out_fast(silent_server: int) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{silent_server}/0", socket_timeout=0.2)
    limiter = RateLimiter("3/minute", store=store, on_store_error="allow")
    for _ in range(3):  # the first request builds the client, the next ones take the fast path
        start = time.monotonic()
        d = limiter.hit("k")
        assert d.allowed and d.fallback
        assert time.monotonic() - start < 0.5
    store.close()


async def test_async_hung_redis_times_out_fast(silent_server: int) -> None:
    store = AsyncRedisStore.from_url(f"redis://127.0.0.1:{silent_server}/0", socket_timeout=0.2)
    limiter = AsyncRateLimiter("3/minute", store=store, on_store_error="deny")
    start = time.monotonic()
    results = await asyncio.gather(*(limiter.hit("k") for _ in range(20)))
    assert all(not d.allowed and d.fallback for d in results)
    assert time.monotonic() - start < 0.8
    await store.close()


def test_environment_documents_the_server_binary() -> None:
    assert os.path.exists(env_url("RATEKEEPER_REDIS_SERVER_BIN"))


# --------------------------------------------------------------------------- client variants


def test_clients_that_decode_responses(url: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    store = RedisStore(client=client, prefix=prefix())
    limiter = RateLimiter("2/minute;5/hour", store=store, max_concurrent=1)
    assert [limiter.hit("k").allowed for _ in range(3)] == [True, True, False]
    with limiter.acquire("j"):
        assert store.acquire_lease("j", "other", 1, 60, 0) > 0
    client.close()
    cluster_url = env_url("RATEKEEPER_REDIS_CLUSTER_URL")
    host, port = cluster_url.removeprefix("redis+cluster://").split(",")[0].split(":")
    cluster = redis.cluster.RedisCluster(host=host, port=int(port), decode_responses=True)
    limiter = RateLimiter("1/minute", store=RedisStore(client=cluster, prefix=prefix()))
    assert limiter.hit("k").allowed and not limiter.hit("k").allowed
    cluster.close()


async def test_async_clients_that_decode_responses(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    limiter = AsyncRateLimiter("2/minute", store=AsyncRedisStore(client=client, prefix=prefix()))
    decisions = await asyncio.gather(*(limiter.hit("k") for _ in range(3)))
    assert sorted(d.allowed for d in decisions) == [False, True, True]
    await client.aclose()


async def test_async_without_pipelining(url: str) -> None:
    store = AsyncRedisStore.from_url(url, prefix=prefix(), pipelining=False)
    limiter = AsyncRateLimiter("30/hour;40/day", algorithm="fixed_window", store=store)
    results = await asyncio.gather(*(limiter.hit("k") for _ in range(60)))
    assert sum(d.allowed for d in results) == 30
    await store.close()


async def test_async_batch_after_script_flush(url: str, raw: redis.Redis) -> None:
    store = AsyncRedisStore.from_url(url, prefix=prefix())
    limiter = AsyncRateLimiter("20/minute", algorithm="sliding_window", store=store)
    assert (await limiter.hit("k")).remaining == 19
    raw.script_flush()
    results = await asyncio.gather(*(limiter.hit("k") for _ in range(30)))  # one pipeline
    assert sum(d.allowed for d in results) == 19
    assert not any(d.fallback for d in results)
    await store.close()


async def test_async_cancelled_tasks_leave_the_store_working(url: str) -> None:
    store = AsyncRedisStore.from_url(url, prefix=prefix())
    # a day: refilling 16 tokens a second (1000/minute) made a slow run count 49 of 50 hits
    limiter = AsyncRateLimiter("1000/day", store=store)
    tasks = [asyncio.create_task(limiter.hit("k")) for _ in range(100)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(d, Decision | asyncio.CancelledError) for d in done)
    after = await limiter.peek("k", cost=0)
    consumed = 1000 - after.remaining
    assert 50 <= consumed <= 100  # a cancelled waiter may still have been counted by Redis
    results = await asyncio.gather(*(limiter.hit("k") for _ in range(10)))
    assert all(d.allowed and not d.fallback for d in results)
    await store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_connection(url: str) -> None:
    import warnings

    store = RedisStore.from_url(url, prefix=prefix())
    limiter = RateLimiter("10/hour", store=store)
    assert [limiter.hit("k").remaining for _ in range(2)] == [9, 8]
    assert store._wire._own is not None  # the parent holds a connection
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # the child
        try:
            fresh = store._wire._own is None
            remaining = limiter.hit("k").remaining
            os.write(write, f"{fresh} {remaining}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    assert answer == "True 7"
    assert limiter.hit("k").remaining == 6  # the parent's connection still works
    store.close()


def test_cluster_and_sentinel_url_details() -> None:
    store = RedisStore.from_url("redis+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2/main/3")
    client = store._wire.factory()  # type: ignore[misc]
    pool = client.connection_pool
    assert pool.service_name == "main"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "u", "p@ss")
    sentinels = [s.connection_pool.connection_kwargs for s in client._ratekeeper_also_close]
    assert [(s["host"], s["port"]) for s in sentinels] == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert all(s["socket_timeout"] == 5.0 for s in sentinels)
    store.close()

    url = env_url("RATEKEEPER_REDIS_CLUSTER_URL")
    store = RedisStore.from_url(url + "?socket_timeout=0.3", prefix=prefix())
    store.ping()
    nodes = store._wire.client.get_nodes()
    assert len(nodes) == 3
    assert all(
        n.redis_connection.connection_pool.connection_kwargs["socket_timeout"] == 0.3 for n in nodes
    )
    store.close()


# ------------------------------------------------------------------ the sliding log in place


def _sliding_log_trace(
    store: RedisStore,
    limits: tuple[Limit, ...],
    steps: list[tuple[str, float, float]],
    now: float = 1_700_000_000.25,
) -> None:
    replay(store, Rule("sliding_log", limits), steps, now)


def test_sliding_log_long_logs_out_of_order_and_compaction(url: str) -> None:
    """Long logs (thousands of entries), entries older than the newest (clock stepping back),
    expiry of one, many or every entry, and the dead prefix dropped and kept around its bound:
    Lua equals Python at every step."""
    store = RedisStore.from_url(url, prefix=prefix(), time_source="client")
    rng = random.Random(20261124)
    limits = (Limit(400, per=10), Limit(3000, per=60))
    steps: list[tuple[str, float, float]] = []
    for _ in range(3000):
        op = rng.choice(["hit"] * 12 + ["peek", "back", "back"])
        advance = rng.choice([0.0, 0.0, 1e-7, 0.001, 0.004, 0.01, 0.02, 0.05, 0.3])
        if rng.random() < 0.004:
            advance = rng.choice([5.0, 9.99, 10.0, 30.0, 61.0])  # many or every entry expire
        steps.append((op, advance, rng.choice([0, 1, 1, 1, 2, 3])))
    _sliding_log_trace(store, limits, steps)
    # fractional costs: the sum is taken entry by entry, oldest first
    steps = [
        (rng.choice(["hit", "hit", "hit", "back"]), rng.choice([0.0, 0.001, 0.01, 0.2]), c)
        for c in rng.choices([1, 0.1, 0.25, 0.3, 2, 0.7], k=1200)
    ]
    _sliding_log_trace(store, (Limit(40, per=2.5),), steps)
    # every step back lands before the newest entry, often between entries of equal time
    steps = [("hit", 0.0, 1)] * 5
    for _ in range(400):
        steps += [("hit", 0.01, rng.choice([1, 2])), ("back", rng.choice([0.01, 0.02, 0.5]), 1)]
        steps += [("hit", rng.choice([0.02, 0.03, 0.6]), 1)]
    _sliding_log_trace(store, (Limit(150, per=3),), steps)
    store.close()


@pytest.mark.parametrize("dead", [0, 1, 9, 10, 11, 20])
def test_sliding_log_compaction_boundaries(url: str, raw: redis.Redis, dead: int) -> None:
    """20 entries, then `dead` of them expire at one admission: the dead prefix is kept while it
    is at most the live entries, dropped past that; the decisions equal Python's either way, and
    the string holds a 24-byte header and 16 bytes per kept entry."""
    p = prefix()
    store = RedisStore.from_url(url, prefix=p, time_source="client")
    limits = (Limit(100, per=10),)
    steps = [("hit", 0.01, 1)] * 20
    steps += [("hit", 9.805 + 0.01 * dead if dead else 0.0, 1)]  # the cutoff between entries
    steps += [("hit", 0.0, 2), ("back", 0.005, 1), ("hit", 0.0, 0), ("peek", 0, 1)]
    _sliding_log_trace(store, limits, steps)
    (key,) = raw.keys(f"{p}:*")
    state = raw.get(key)
    assert state is not None and state[:4] == b"RKL1"
    live = 20 - dead + 3
    kept = live + dead if dead <= 10 else live
    assert len(state) == 24 + 16 * kept
    assert 0 < raw.pttl(key) <= 10_000 + 600_000
    store.close()


def test_sliding_log_ignores_an_older_layout(url: str, raw: redis.Redis) -> None:
    """A key holding the older layout (bare packed entries) reads as an empty log, is never
    misread, and is replaced by the next admission."""
    p = prefix()
    store = RedisStore.from_url(url, prefix=p, time_source="client")
    limiter = RateLimiter("2/minute", algorithm="sliding_log", store=store, clock=FakeClock(1e6))
    key = store.reset_keys("k", limiter.rule)[0]
    for entries in (1, 2, 3):  # 16, 32 and 48 bytes: never a header and whole records
        raw.set(key, struct.pack(f"<{2 * entries}d", *[1e6, 1.0] * entries))
        assert limiter.peek("k", cost=0).remaining == 2
    assert limiter.hit("k").allowed and limiter.hit("k").allowed
    assert not limiter.hit("k").allowed
    assert raw.get(key)[:4] == b"RKL1"  # type: ignore[index]
    store.close()
