"""Decisions per second of the decision service (``ratekeeper serve``, ``POST /v1/check``).

    python -m benchmarks.decision_service [--redis-url redis://...] [--seconds 5] [--smoke]

Starts ``ratekeeper serve`` (one uvicorn worker, one process) on a free loopback port for each
store (memory, and Redis when a URL is given), then measures for ``--seconds`` each:

- 1 client: one keep-alive connection, one check at a time (the round-trip cost);
- 50 clients: 50 keep-alive connections checking at once, from 2 load processes of 25 asyncio
  tasks each (so the load generator is not the bottleneck of a Python client);
- batch: 1 client sending ``/v1/check/batch`` requests of 100 checks.

Each check is ``{"limiter": "bench", "key": <one of 1000 keys>}`` on a limit that never denies
(the cost measured is the decision, not the denial path). Prints a Markdown table: decisions/s,
and per request p50 and p99 latency in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.ports import free_port

KEYS = 1000
PROCESSES = 2
TASKS_PER_PROCESS = 25  # 2 x 25 = 50 concurrent clients
BATCH = 100
START_TIMEOUT = 30.0
POLL = 0.05  # seconds between attempts to reach the starting server


@contextmanager
def serve(store_url: str, token: str) -> Iterator[str]:
    """``ratekeeper serve`` for one limiter on ``store_url``; yields its base URL."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "ratekeeper.toml"
        config.write_text(
            f'[stores.bench]\nurl = "{store_url}"\n\n'
            '[limiters.bench]\nlimits = "1000000000/second"\nstore = "bench"\n'
        )
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "ratekeeper", "serve", "--config", str(config),
             "--port", str(port), "--log-level", "warning"],
            env={**os.environ, "RATEKEEPER_ADMIN_TOKEN": token},
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    httpx.get(base + "/", timeout=1)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("ratekeeper serve did not start") from None
                    time.sleep(POLL)
            yield base
        finally:
            process.terminate()
            process.wait(20)


def _body() -> dict[str, object]:
    return {"limiter": "bench", "key": f"k{random.randrange(KEYS)}"}


async def _load(base: str, token: str, tasks: int, seconds: float, batch: int) -> list[float]:
    """Latencies (s) of every request made by ``tasks`` clients during ``seconds``.

    Each client is one keep-alive HTTP/1.1 connection written and read with asyncio streams
    (a full HTTP client library would cost more CPU than the server it measures)."""
    host, port = base.removeprefix("http://").split(":")
    path = "/v1/check/batch" if batch else "/v1/check"
    latencies: list[float] = []

    def request() -> bytes:
        body = json.dumps({"checks": [_body() for _ in range(batch)]} if batch else _body())
        return (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    async def client(end: float) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < end:
                data = request()
                start = time.perf_counter()
                writer.write(data)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode())
        finally:
            writer.close()

    await client(time.perf_counter())  # connect once: the server is up
    end = time.perf_counter() + seconds
    await asyncio.gather(*(client(end) for _ in range(tasks)))
    return latencies


def _process(base: str, token: str, tasks: int, seconds: float, batch: int) -> list[float]:
    return asyncio.run(_load(base, token, tasks, seconds, batch))


def measure(
    base: str, token: str, processes: int, tasks: int, seconds: float, batch: int = 0
) -> tuple[float, float, float]:
    """(decisions/s, p50 ms, p99 ms)."""
    if processes == 1:
        latencies = _process(base, token, tasks, seconds, batch)
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            parts = pool.starmap(_process, [(base, token, tasks, seconds, batch)] * processes)
        latencies = [value for part in parts for value in part]
    decisions = len(latencies) * (batch or 1)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return decisions / seconds, cuts[49] * 1000, cuts[98] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("RATEKEEPER_REDIS_URL"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--smoke", action="store_true", help="0.5 s per case")
    args = parser.parse_args(argv)
    seconds = 0.5 if args.smoke else args.seconds
    token = secrets.token_urlsafe()
    stores = [("memory", "memory://")]
    if args.redis_url:
        stores.append(("redis", args.redis_url))
    print("| store | clients | decisions/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|")
    for label, url in stores:
        with serve(url, token) as base:
            cases = [
                ("1", 1, 1, 0),
                ("50", PROCESSES, TASKS_PER_PROCESS, 0),
                (f"1, batches of {BATCH}", 1, 1, BATCH),
            ]
            for clients, processes, tasks, batch in cases:
                rate, p50, p99 = measure(base, token, processes, tasks, seconds, batch)
                print(f"| {label} | {clients} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
