"""``ratekeeper loadtest URL``: send a bounded number of requests with a bounded number of
concurrent connections and report status counts and latency percentiles (standard library only:
one thread and one kept-alive ``http.client`` connection per concurrent caller).

Meant for your own staging or loopback services, to watch a limit work: 429s appear in the status
counts, and the latency percentiles show what waiting costs.
"""

from __future__ import annotations

import http.client
import itertools
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ratekeeper.errors import ConfigError

__all__ = ["MAX_CONCURRENCY", "MAX_REQUESTS", "LoadResult", "format_result", "loadtest"]

MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 1_000
DEFAULT_TIMEOUT = 10.0  # seconds per request
PERCENTILES = (50, 90, 99)


@dataclass
class LoadResult:
    requests: int
    elapsed: float
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # exception class names
    latencies: list[float] = field(default_factory=list)  # seconds, of answered requests

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile latency in seconds (nearest rank); 0 if nothing answered."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"loadtest needs an http:// or https:// URL, got {url!r}")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return kind(parts.hostname, parts.port, timeout=timeout), path


def loadtest(
    url: str,
    requests: int,
    concurrency: int,
    *,
    method: str = "GET",
    timeout: float = DEFAULT_TIMEOUT,
) -> LoadResult:
    """Send ``requests`` requests to ``url`` from ``concurrency`` callers; wait for them all."""
    if not 1 <= requests <= MAX_REQUESTS:
        raise ConfigError(f"requests must be from 1 to {MAX_REQUESTS}, got {requests}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"concurrency must be from 1 to {MAX_CONCURRENCY}, got {concurrency}")
    _connection(url, timeout)  # a bad URL fails here, not in every thread
    tickets = itertools.count()
    lock = threading.Lock()
    result = LoadResult(requests, 0.0)

    def caller() -> None:
        connection, path = _connection(url, timeout)
        try:
            while True:
                with lock:
                    if next(tickets) >= requests:
                        break
                started = time.perf_counter()
                try:
                    connection.request(method, path)
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()  # a fresh connection for the next request
                    with lock:
                        result.errors[type(exc).__name__] += 1
                    continue
                latency = time.perf_counter() - started
                with lock:
                    result.statuses[response.status] += 1
                    result.latencies.append(latency)
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [
        threading.Thread(target=caller, daemon=True) for _ in range(min(concurrency, requests))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - started
    return result


def format_result(result: LoadResult, url: str = "") -> str:
    """The report printed by ``ratekeeper loadtest``."""
    rate = result.requests / result.elapsed if result.elapsed else 0.0
    lines = [
        f"{result.requests} requests{f' to {url}' if url else ''} in {result.elapsed:.2f} s "
        f"({rate:.0f}/s)",
        "status counts:",
    ]
    lines += [f"  {status}: {n}" for status, n in sorted(result.statuses.items())]
    lines += [f"  error {name}: {n}" for name, n in sorted(result.errors.items())]
    marks = ", ".join(f"p{p} {result.percentile(p) * 1000:.1f} ms" for p in PERCENTILES)
    top = max(result.latencies, default=0.0) * 1000
    lines.append(f"latency: {marks}, max {top:.1f} ms")
    return "\n".join(lines) + "\n"
