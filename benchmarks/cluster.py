"""Redis Cluster scale-out: asyncio decisions per second on a 1-master and a 3-master cluster,
10,000 keys, 200 tasks per client process.

Contenders (all ``fixed_window``, a limit never reached, every decision an admission):
ratekeeper pipelined (the default: one pipeline per master of the calls made in one loop
iteration), ratekeeper with ``pipelining=False`` (one round trip per decision, through
redis-py's Cluster client), limits (``async+redis+cluster://``, its default client) and
throttled-py (``redis+cluster://``). Both clusters are private: cluster-enabled redis-servers
on free loopback ports, slots split evenly, no replicas, stopped by PID at the end.

Every decision runs in worker processes (one process: the single-client figure; N processes:
N clients at once, each its own event loop and 200 tasks, the sum of their decisions per
second), so a single Python client's CPU is not mistaken for the servers' limit. Every
(cluster, processes, contender) case is measured once per round, the order rotated each round;
rows give the median and the spread ((max - min) / median) of the rounds.

    PYTHONPATH=.:src .venv/bin/python -m benchmarks.cluster [--smoke] [--processes 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import adapters as ad
from benchmarks.adapters import Contender
from benchmarks.measure import key_sequence, summarize, tasks_rate
from benchmarks.ports import free_port
from benchmarks.results import FULL, SMOKE, Settings, fmt, log

MASTERS = (1, 3)
PROCESSES = (1, 2)
TASKS = 200  # asyncio tasks per client process
KEYS = 10_000
FAMILY = "fixed_window"  # the algorithm every contender offers
SAMPLE_FACTOR = 5  # decisions per sample, all processes together: this many times async_n
SLOTS = 16384
START_BOUND = 10.0  # seconds for a server, or the cluster, to come up
STOP_BOUND = 5.0  # seconds for a server to exit after SIGTERM before SIGKILL
POLL = 0.02  # seconds between checks of a server's state
BARRIER_BOUND = 120.0  # seconds a client process waits for the others of its sample
CONTENDERS = ("ratekeeper pipelined", "ratekeeper one by one", "limits", "throttled-py")


# --------------------------------------------------------------------------- private clusters


class PrivateCluster:
    """``with PrivateCluster(masters) as url:`` starts ``masters`` cluster-enabled redis-servers
    (no persistence, no replicas) on free loopback ports, gives each an even share of the slots,
    has them meet, waits for ``cluster_state:ok`` everywhere; stops them by PID after.
    (:meth:`start`, then :meth:`wait`, to bring several up at once: a master says ``ok`` no
    sooner than 2 s after it started.)"""

    def __init__(self, masters: int, binary: str | None = None) -> None:
        self.masters = masters
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.folder: tempfile.TemporaryDirectory[str] | None = None
        self.ports: list[int] = []

    def __enter__(self) -> str:
        self.start()
        return self.wait()

    def start(self) -> None:
        """Start the servers and give out the slots."""
        import redis

        if not Path(self.binary).exists():
            raise RuntimeError("redis-server not found; install it")
        self.folder = tempfile.TemporaryDirectory(prefix="ratekeeper-cluster-")
        buses: list[int] = []
        try:
            for i in range(self.masters):
                port = free_port()
                data = Path(self.folder.name) / f"node{i}"
                data.mkdir()
                options = ["--bind", "127.0.0.1", "--port", str(port), "--save", ""]
                options += ["--appendonly", "no", "--protected-mode", "no", "--dir", str(data)]
                options += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                bus = free_port()  # else port + 10000: past 65535 for a high free port
                options += ["--cluster-port", str(bus)]
                self.processes.append(
                    subprocess.Popen(
                        [self.binary, *options],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                self.ports.append(port)
                buses.append(bus)
            clients = [redis.Redis(port=port) for port in self.ports]
            try:
                for client, process in zip(clients, self.processes, strict=True):
                    _until(lambda c=client, p=process: _pings(c, p), "a cluster node answers")
                share = SLOTS // self.masters
                for i, client in enumerate(clients):
                    last = SLOTS - 1 if i == self.masters - 1 else (i + 1) * share - 1
                    client.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
                for port, bus in zip(self.ports[1:], buses[1:], strict=True):
                    clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port, bus)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.__exit__()
            raise

    def wait(self) -> str:
        """Wait for the cluster to be up; its URL."""
        import redis

        clients = [redis.Redis(port=port) for port in self.ports]
        try:
            for client in clients:
                _until(lambda c=client: self._ready(c), "the cluster is up")
        except BaseException:
            self.__exit__()
            raise
        finally:
            for client in clients:
                client.close()
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def _ready(self, client: Any) -> bool:
        info = client.cluster("INFO")
        return (
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_known_nodes", 0)) == self.masters
            and int(info.get("cluster_slots_ok", 0)) == SLOTS
        )

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=STOP_BOUND)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


def _pings(client: Any, process: subprocess.Popen[bytes]) -> bool:
    import redis

    if process.poll() is not None:
        raise RuntimeError(f"redis-server exited with {process.returncode}")
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + START_BOUND
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {START_BOUND} s: {what}")
        time.sleep(POLL)


# --------------------------------------------------------------------------- contenders


def contender(name: str, url: str) -> Contender:
    """One of :data:`CONTENDERS` on the cluster at ``url`` (built in the worker's loop)."""
    if name.startswith("ratekeeper"):
        from ratekeeper import AsyncRateLimiter, Limit
        from ratekeeper.stores.redis import AsyncRedisStore

        pipelining = name == "ratekeeper pipelined"
        store = AsyncRedisStore.from_url(url, pipelining=pipelining)
        limiter = AsyncRateLimiter(Limit(ad.AMOUNT, per=ad.PER), algorithm=FAMILY, store=store)
        what = f"{FAMILY}, {'pipelined' if pipelining else 'pipelining=False'}"
        return Contender("ratekeeper", what, limiter.hit, store.close, is_async=True)
    build = ad.limits_async(FAMILY, url) if name == "limits" else ad.throttled_async(FAMILY, url)
    assert build is not None
    return build()


@dataclass(frozen=True)
class Job:
    """One client process's share of a sample."""

    contender: str
    url: str
    keys: list[str]  # the decisions it makes, in order
    warmup: int
    ready: Any  # a Barrier (a manager's proxy) of the sample's processes: the common start


def work(job: Job) -> tuple[float, float, int]:
    """In a worker process: build the contender, warm it up, wait for the other processes of
    the sample, make the job's decisions with TASKS tasks; (start, end, decisions), in
    time.monotonic() seconds (one clock for every process on Linux)."""
    return asyncio.run(_work(job))


async def _work(job: Job) -> tuple[float, float, int]:
    built = contender(job.contender, job.url)
    try:
        await tasks_rate(built.hit, job.keys[: job.warmup], TASKS)
        job.ready.wait()  # nothing else runs in this loop meanwhile
        start = time.monotonic()
        await tasks_rate(built.hit, job.keys, TASKS)
        return start, time.monotonic(), len(job.keys)
    finally:
        closed = built.close()
        if asyncio.iscoroutine(closed):
            await closed


def sample(
    pool: Any,
    manager: Any,
    case: tuple[int, int, str],
    url: str,
    n: int,
    warmup: int,
) -> float:
    """Decisions per second of ``processes`` clients at once, ``n`` decisions in all over the
    same KEYS keys (new ones each sample)."""
    _, processes, name = case
    keys = key_sequence(KEYS, n, uuid.uuid4().hex[:8])
    ready = manager.Barrier(processes, timeout=BARRIER_BOUND)
    jobs = [Job(name, url, keys[p::processes], warmup, ready) for p in range(processes)]
    done = pool.map(work, jobs, chunksize=1)
    begin = min(start for start, _, _ in done)
    end = max(stop for _, stop, _ in done)
    return sum(count for _, _, count in done) / (end - begin)


def family(masters: int, processes: int) -> str:
    return (
        f"{masters} master{'s' if masters > 1 else ''}, "
        f"{processes} process{'es' if processes > 1 else ''}"
    )


def measure(
    settings: Settings, processes: Sequence[int] = PROCESSES, masters: Sequence[int] = MASTERS
) -> list[tuple[str, Contender, list[float]]]:
    """(family, contender, decisions/s per round) for every cluster size, process count and
    contender, measured interleaved round by round."""
    n = SAMPLE_FACTOR * settings.async_n
    clusters = [PrivateCluster(count) for count in masters]
    urls: dict[int, str] = {}
    context = multiprocessing.get_context("spawn")
    try:
        for cluster in clusters:
            cluster.start()
        for count, cluster in zip(masters, clusters, strict=True):
            urls[count] = cluster.wait()
            log(f"== started a {count}-master cluster at {urls[count]}")
        cases = [(m, p, name) for m in masters for p in processes for name in CONTENDERS]
        samples: dict[tuple[int, int, str], list[float]] = {case: [] for case in cases}
        # A Pool starts every worker at once (a ProcessPoolExecutor may reuse one idle worker for
        # both jobs of a sample, which then waits at the barrier for ever).
        with context.Manager() as manager, context.Pool(max(processes)) as pool:
            failed: set[tuple[int, int, str]] = set()
            for repeat in range(settings.repeats):
                for i in range(len(cases)):
                    case = cases[(repeat + i) % len(cases)]
                    if case in failed:
                        continue
                    try:
                        rate = sample(pool, manager, case, urls[case[0]], n, settings.warmup)
                    except Exception as exc:  # a peer that fails is left out, not the run
                        log(f"  {family(*case[:2])} {case[2]} FAILED, left out: {exc!r:.200}")
                        failed.add(case)
                        continue
                    samples[case].append(rate)
            for case in failed:
                del samples[case]
    finally:
        for cluster in clusters:
            cluster.__exit__()
    rows = []
    for m, p, name in samples:
        what = Contender(*_names(name), hit=_nothing)
        rows.append((family(m, p), what, samples[m, p, name]))
    return rows


def _names(name: str) -> tuple[str, str]:
    """(library, algorithm) of a contender's rows."""
    if name.startswith("ratekeeper"):
        mode = "pipelined" if name == "ratekeeper pipelined" else "pipelining=False"
        return "ratekeeper", f"{FAMILY}, {mode}"
    return name, FAMILY.replace("_", " ")


def _nothing(key: str) -> None:
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny iteration counts (a check)")
    parser.add_argument(
        "--processes",
        default=",".join(map(str, PROCESSES)),
        help="client process counts, comma-separated (default: 1,2)",
    )
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    processes = [int(p) for p in args.processes.split(",")]
    for fam, built, values in measure(settings, processes):
        median, spread = summarize(values)
        log(
            f"  {fam:22} {built.library:13} {built.algorithm:30} "
            f"{fmt(median, 'dec/s'):>12}  ±{spread * 100:4.1f}%"
        )


if __name__ == "__main__":
    main()
