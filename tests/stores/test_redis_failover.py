"""Redis failovers on private servers: a Sentinel-managed master and a Cluster master are killed
(SIGKILL) while threads and asyncio tasks make decisions non-stop.

While the master is gone every decision still comes back within ``BOUND`` (a fallback by
``on_store_error="allow"`` is expected then), and once the replica is promoted the same stores,
never rebuilt, give real decisions again within ``RECOVERY_BOUND``. The outage each driver saw
and the worst decision are printed (``pytest -s``): they are the README's failover figures.

Every process is started here on free loopback ports and stopped by its PID however the test
ends; the shared servers of ``scripts/services`` are never touched.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import redis

from ratekeeper import AsyncRateLimiter, Decision, RateLimiter
from ratekeeper.stores.redis import AsyncRedisStore, RedisStore

from .backends.redis import env_url
from .test_redis import free_port

pytestmark = pytest.mark.redis

BOUND = 1.0  # seconds: every decision with default settings, whatever the fault
RECOVERY_BOUND = 2.0  # seconds after the promotion by which every decision is real again
STEADY = 1.0  # seconds of decisions watched after RECOVERY_BOUND: all of them must be real
PROMOTION_BOUND = 15.0  # seconds from the kill to a promoted replica (the servers' own timing)
WARM = 0.3  # seconds of healthy traffic before the kill
PACE = 0.01  # seconds each caller pauses between decisions (load, not timing logic)
THREADS, TASKS = 4, 20  # callers per driver
START_BOUND = 10.0  # seconds for a server or a topology to come up
STOP_BOUND = 5.0  # seconds for a process to exit after SIGTERM before SIGKILL
POLL = 0.05  # seconds between checks of a server's state
DOWN_AFTER_MS = 500  # sentinel: a master silent this long is down
FAILOVER_TIMEOUT_MS = 2000
CLUSTER_NODE_TIMEOUT_MS = 1000
LIMIT = "1000000/hour"  # never binding: a real decision is an allowed one
SERVICE = "failover"
REPLICA_PER_MASTER = ("--cluster-replicas", "1", "--cluster-yes")
SLOTS = 16384  # hash slots of a Redis Cluster
Driver = Literal["sync", "async"]
DRIVERS: tuple[Driver, ...] = ("sync", "async")
CLUSTER_DRIVERS: tuple[Driver, ...] = DRIVERS  # tests/stores/test_redis_cluster.py: the races


# --------------------------------------------------------------------------- processes


class Processes:
    """The servers one test started: spawned, killed and finally stopped by PID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.binary = env_url("RATEKEEPER_REDIS_SERVER_BIN")
        self.started: dict[int, subprocess.Popen[bytes]] = {}  # by port

    def redis(self, name: str, port: int, *lines: str, sentinel: bool = False) -> int:
        """Start a redis-server (or sentinel) from a config file of ``lines``; its port."""
        data = self.folder / name
        data.mkdir()
        config = self.folder / f"{name}.conf"  # a sentinel rewrites its own config
        base = [
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode no",
            'save ""',
            "appendonly no",
            f"dir {data}",
            "repl-diskless-sync-delay 0",  # a replica syncs at once (the default waits 5 s)
        ]
        config.write_text("\n".join([*base, *lines]) + "\n")
        args = [self.binary, str(config), *(["--sentinel"] if sentinel else [])]
        with open(self.folder / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.started[port] = proc
        until(lambda: ping(port), f"{name} answers on port {port}", START_BOUND)
        return port

    def kill(self, port: int) -> None:
        """SIGKILL the server of this test listening on ``port``."""
        proc = self.started[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(STOP_BOUND)

    def stop_all(self) -> None:
        for proc in self.started.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started.values():
            try:
                proc.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_BOUND)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0)


def ping(port: int) -> bool:
    try:
        with client(port) as c:
            return bool(c.ping())
    except redis.RedisError:
        return False


def until(check: Callable[[], bool], what: str, bound: float) -> float:
    """Poll ``check`` until it holds; the monotonic time it first held."""
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"not within {bound} s: {what}"
        time.sleep(POLL)
    return time.monotonic()


def info(port: int, section: str) -> dict[str, object]:
    with client(port) as c:
        return c.info(section)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class Call:
    driver: Driver
    caller: int
    start: float  # monotonic seconds
    seconds: float
    fallback: bool  # or an exception escaped: not a real decision either


class Traffic:
    """THREADS threads (``limiter``) and TASKS asyncio tasks (``alimiter``, in a thread of their
    own) deciding non-stop, each caller on its own key, until the ``with`` block ends."""

    def __init__(
        self, limiter: RateLimiter | None, alimiter: AsyncRateLimiter | None, keys: list[str]
    ) -> None:
        self.limiter, self.alimiter, self.keys = limiter, alimiter, keys
        self.calls: list[Call] = []
        self.errors: dict[str, str] = {}  # exception type -> the first one's traceback
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        if limiter is not None:
            self.threads += [
                threading.Thread(target=self.thread, args=(limiter, i), daemon=True)
                for i in range(THREADS)
            ]
        if alimiter is not None:
            runner = threading.Thread(target=asyncio.run, args=(self.tasks(alimiter),), daemon=True)
            self.threads.append(runner)

    def key(self, caller: int) -> str:
        return self.keys[caller % len(self.keys)]

    def decided(self, driver: Driver, caller: int, start: float, result: object) -> None:
        """Record one decision, or the exception that escaped it (with its traceback, once)."""
        seconds = time.monotonic() - start
        with self.lock:
            if isinstance(result, BaseException):
                kind = f"{type(result).__module__}.{type(result).__qualname__}"
                text = "".join(traceback.format_exception(result))
                self.errors.setdefault(kind, f"{driver}: {text}")
                fallback = True
            else:
                assert isinstance(result, Decision)
                fallback = result.fallback
            self.calls.append(Call(driver, caller, start, seconds, fallback))

    def thread(self, limiter: RateLimiter, caller: int) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            result: object
            try:
                result = limiter.hit(self.key(caller))
            except Exception as exc:  # reported by the test
                result = exc
            self.decided("sync", caller, start, result)
            time.sleep(PACE)

    async def tasks(self, alimiter: AsyncRateLimiter) -> None:
        async def task(caller: int) -> None:
            while not self.stopping.is_set():
                start = time.monotonic()
                result: object
                try:
                    result = await alimiter.hit(self.key(caller))
                except Exception as exc:  # reported by the test
                    result = exc
                self.decided("async", caller, start, result)
                await asyncio.sleep(PACE)

        try:
            await asyncio.gather(*(task(i) for i in range(TASKS)))
        finally:
            await alimiter.store.close()

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(BOUND + STOP_BOUND)


def failover_under_traffic(
    what: str,
    url: str,
    drivers: tuple[Driver, ...],
    keys: list[str],
    kill: Callable[[], None],
    promoted: Callable[[], bool],
) -> None:
    """Kill a master under traffic from stores built on ``url`` with the library's defaults, and
    check the bound and the recovery (see the module docstring)."""
    sync = RedisStore.from_url(url) if "sync" in drivers else None
    aio = AsyncRedisStore.from_url(url) if "async" in drivers else None
    limiter = None if sync is None else RateLimiter(LIMIT, store=sync, on_store_error="allow")
    alimiter = None if aio is None else AsyncRateLimiter(LIMIT, store=aio, on_store_error="allow")
    try:
        with Traffic(limiter, alimiter, keys) as traffic:
            time.sleep(WARM)
            killed = time.monotonic()
            kill()
            promotion = until(promoted, f"{what}: a replica is promoted", PROMOTION_BOUND)
            time.sleep(promotion + RECOVERY_BOUND + STEADY - time.monotonic())
        assert not any(t.is_alive() for t in traffic.threads), f"{what}: a caller is stuck"
    finally:
        if sync is not None:
            sync.close()
    print(f"\n{what}: replica promoted {promotion - killed:.2f} s after the kill")
    for driver in drivers:
        calls = [c for c in traffic.calls if c.driver == driver]
        fallbacks = [c for c in calls if c.fallback]
        if fallbacks:
            first = min(c.start for c in fallbacks) - killed
            last = max(c.start + c.seconds for c in fallbacks) - killed
            outage = f"fallbacks from {first:+.2f} s to {last:+.2f} s after the kill"
        else:
            outage = "no fallback"
        worst = max(c.seconds for c in calls)
        print(
            f"{what} {driver}: {len(calls)} decisions, {len(fallbacks)} fallbacks ({outage}), "
            f"worst decision {worst:.3f} s"
        )
        early = [c for c in fallbacks if c.start + c.seconds < killed]
        assert not early, f"{what} {driver}: {len(early)} fallbacks on a healthy server"
        late = [c for c in calls if c.seconds >= BOUND]
        assert not late, f"{what} {driver}: {len(late)} decisions took {BOUND} s or more"
        settled = [c for c in calls if c.start >= promotion + RECOVERY_BOUND]
        callers = THREADS if driver == "sync" else TASKS
        assert {c.caller for c in settled} == set(range(callers)), f"{what} {driver}: idle callers"
        still = [c for c in settled if c.fallback]
        assert not still, (
            f"{what} {driver}: {len(still)} fallbacks more than {RECOVERY_BOUND} s after the "
            f"promotion (the last {max(c.start for c in still) - promotion:.2f} s after it)"
        )
    escaped = "\n".join(traffic.errors.values())
    assert not escaped, f"{what}: exceptions escaped decisions:\n{escaped}"


# --------------------------------------------------------------------------- Sentinel


def test_sentinel_master_killed_decisions_continue_and_recover(processes: Processes) -> None:
    master, replica, sentinel = free_port(), free_port(), free_port()
    processes.redis("master", master)
    processes.redis("replica", replica, f"replicaof 127.0.0.1 {master}")
    until(
        lambda: info(replica, "replication").get("master_link_status") == "up",
        "the replica is in sync",
        START_BOUND,
    )
    processes.redis(
        "sentinel",
        sentinel,
        "sentinel resolve-hostnames no",
        f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1",
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
        sentinel=True,
    )

    def master_port() -> int:
        with client(sentinel) as c:
            _, port = c.sentinel_get_master_addr_by_name(SERVICE)
            return int(port)

    def replica_known() -> bool:
        with client(sentinel) as c:
            replicas = c.sentinel_slaves(SERVICE)
        return any(
            r["port"] == replica and r["master-link-status"] == "ok" and not r["is_sdown"]
            for r in replicas
        )

    until(replica_known, "the sentinel knows the replica", START_BOUND)
    failover_under_traffic(
        "sentinel",
        f"redis+sentinel://127.0.0.1:{sentinel}/{SERVICE}",
        DRIVERS,
        [f"user:{i}" for i in range(TASKS)],
        lambda: processes.kill(master),
        lambda: master_port() == replica,
    )


# --------------------------------------------------------------------------- Cluster


def test_cluster_master_killed_decisions_continue_and_recover(processes: Processes) -> None:
    began = time.monotonic()
    ports = [free_port() for _ in range(6)]
    for i, port in enumerate(ports):
        processes.redis(
            f"node{i}",
            port,
            "cluster-enabled yes",
            f"cluster-config-file nodes-{port}.conf",
            f"cluster-port {free_port()}",
            "cluster-announce-ip 127.0.0.1",
            f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}",
        )
    cli = env_url("RATEKEEPER_REDIS_CLI_BIN")
    subprocess.run(
        [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), *REPLICA_PER_MASTER],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        timeout=START_BOUND,
    )

    def healthy(port: int) -> bool:
        with client(port) as c:
            state = c.cluster("INFO")
        return state.get("cluster_state") == "ok" and int(state.get("cluster_slots_ok", 0)) == SLOTS

    def replication(port: int) -> dict[str, object]:
        return info(port, "replication")

    def in_sync() -> bool:
        replicas = [p for p in ports if replication(p).get("role") == "slave"]
        return (
            all(healthy(p) for p in ports)
            and len(replicas) == len(ports) // 2
            and all(replication(p).get("master_link_status") == "up" for p in replicas)
        )

    until(in_sync, "the cluster is up, every replica in sync", START_BOUND)
    print(f"\ncluster: 3 masters and 3 replicas up in {time.monotonic() - began:.2f} s")
    keys = [f"user:{i}" for i in range(TASKS)]  # the first one's master is killed
    with client(ports[0]) as c:
        slot = c.cluster("KEYSLOT", keys[0])
        owner = next(
            int(master[1]) for start, end, master, *_ in c.cluster("SLOTS") if start <= slot <= end
        )
    heir = next(p for p in ports if replication(p).get("master_port") == owner)

    def promoted() -> bool:
        try:
            return replication(heir).get("role") == "master" and healthy(heir)
        except redis.RedisError:
            return False

    failover_under_traffic(
        "cluster",
        "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports),
        CLUSTER_DRIVERS,
        keys,
        lambda: processes.kill(owner),
        promoted,
    )
