"""The outbound clients against a real local HTTP server that enforces its own limit: many
concurrent callers, sync threads and asyncio tasks, receive no 429 after the first one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import httpx
import pytest
import requests

from ratekeeper import AsyncRateLimiter, RateLimiter
from ratekeeper.clients.httpx import AsyncRateLimitedTransport, RateLimitedTransport
from ratekeeper.clients.requests import RateLimitedAdapter
from ratekeeper.testing import MockRateLimiter

from .upstream import Upstream

QUOTA = 10  # the upstream's requests per second
REQUESTS = 18  # after the drained window: a full one and most of the next
CALLERS = 18  # every request its own caller, all at once
LOCAL = "1000/second"  # the local limit is no obstacle: only the upstream's signals hold back


def drained(upstream: Upstream) -> None:
    """Start just after a window opens and use its quota up, so that the first request of the
    client under test meets a 429: the one it may receive."""
    time.sleep(1 - time.time() % 1 + 0.02)
    upstream.drain()


def run_threads(send) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def caller() -> None:
        status = send()
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.mark.parametrize("upstream", [(QUOTA, "draft10"), (QUOTA, "classic")], indirect=True)
def test_httpx_threads_get_no_429_after_the_first(upstream: Upstream) -> None:
    drained(upstream)
    transport = RateLimitedTransport(RateLimiter(LOCAL), key="api")
    with httpx.Client(transport=transport, timeout=10) as client:
        statuses = run_threads(lambda: client.get(upstream.url).status_code)
    assert statuses[429] <= 1, statuses
    assert statuses[200] + statuses[429] == REQUESTS
    assert upstream.statuses[429] == statuses[429]


async def test_httpx_async_tasks_get_no_429_after_the_first(upstream: Upstream) -> None:
    await asyncio.to_thread(drained, upstream)
    transport = AsyncRateLimitedTransport(AsyncRateLimiter(LOCAL))  # key: the host
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        responses = await asyncio.gather(*(client.get(upstream.url) for _ in range(REQUESTS)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[429] <= 1 and statuses[200] + statuses[429] == REQUESTS, statuses


def test_requests_sessions_sharing_a_limiter_get_no_429_after_the_first(
    upstream: Upstream,
) -> None:
    drained(upstream)
    limiter = RateLimiter(LOCAL)
    sessions = []
    for _ in range(2):  # two sessions, one limiter: one view of the upstream
        session = requests.Session()
        session.mount("http://", RateLimitedAdapter(limiter, pool_maxsize=CALLERS))
        sessions.append(session)
    count = iter(range(REQUESTS))

    def send() -> int:
        session = sessions[next(count) % 2]
        return session.get(upstream.url, timeout=10).status_code

    statuses = run_threads(send)
    for session in sessions:
        session.close()
    assert statuses[429] <= 1 and statuses[200] + statuses[429] == REQUESTS, statuses


def test_a_429_is_returned_not_retried_unless_asked(upstream: Upstream) -> None:
    drained(upstream)
    calls: list[httpx.Request] = []

    def key(request: httpx.Request) -> str:
        calls.append(request)
        return "api"

    limiter = RateLimiter(LOCAL)
    with httpx.Client(transport=RateLimitedTransport(limiter, key=key)) as client:
        first = client.get(upstream.url)
        assert first.status_code == 429 and first.headers["Retry-After"]
        assert len(calls) == 1  # the key function: once per request
    drained(upstream)
    started = time.monotonic()
    retrying = RateLimitedTransport(RateLimiter(LOCAL), retry_429=True)
    with httpx.Client(transport=retrying) as client:
        assert client.get(upstream.url).status_code == 200
    assert time.monotonic() - started >= 0.5  # it waited for the upstream's window


def test_the_local_limiter_is_acquired_before_each_request(upstream: Upstream) -> None:
    mock = MockRateLimiter("sequence", sequence=[True, False, True])
    with httpx.Client(transport=RateLimitedTransport(mock, key="api")) as client:
        assert client.get(upstream.url).status_code == 200
        assert client.get(upstream.url).status_code == 200  # waited (on the mock's clock)
    assert mock.calls == [("api", 1.0)] * 3
    with pytest.raises(Exception, match="exceeded"):
        RateLimitedTransport(MockRateLimiter("always_deny")).handle_request(
            httpx.Request("GET", upstream.url)
        )
    assert upstream.statuses[200] == 2
