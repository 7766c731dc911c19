"""End to end: the FastAPI example served by a real uvicorn on 127.0.0.1, driven over TCP by
httpx. The limiter's clock is a FakeClock shared with the test, so nothing sleeps for rate logic."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from ratekeeper.testing import FakeClock

from .test_examples import load


@pytest.fixture
def served() -> Iterator[tuple[str, FakeClock]]:
    example = load("fastapi_tiers")
    clock = FakeClock()
    app = example.create_app(clock=clock, trusted_proxies=["127.0.0.1"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)  # waiting for the server socket, not rate logic
    try:
        yield f"http://127.0.0.1:{port}", clock
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_real_server(served: tuple[str, FakeClock]) -> None:
    base, clock = served
    with httpx.Client(base_url=base, timeout=5) as c:
        free = {"X-API-Key": "key-free"}
        responses = [c.get("/search?q=x", headers=free) for _ in range(6)]
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        ok, denied = responses[0], responses[-1]
        assert ok.json() == {"query": "x", "results": []}
        assert ok.headers["RateLimit-Policy"] == '"5-per-60s";q=5;w=60'
        assert ok.headers["RateLimit"] == '"5-per-60s";r=4;t=12'
        assert ok.headers["X-RateLimit-Remaining"] == "4"
        assert denied.headers["Retry-After"] == "12"
        assert denied.headers["content-type"] == "application/json"
        assert denied.json()["retry_after"] == 12
        # behind a trusted proxy (127.0.0.1 here) the forwarded address is the key
        anon = [c.get("/search", headers={"X-Forwarded-For": "203.0.113.1"}) for _ in range(6)]
        assert [r.status_code for r in anon][-1] == 429
        assert c.get("/search", headers={"X-Forwarded-For": "203.0.113.2"}).status_code == 200
        assert c.get("/health").status_code == 200
        clock.advance(12)
        assert c.get("/search", headers=free).status_code == 200
