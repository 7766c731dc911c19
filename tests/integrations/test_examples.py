"""Every example is imported and driven by its framework's test client, and started as a script
(``python examples/x.py``) to check that it serves on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from ratekeeper.testing import FakeClock

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"ratekeeper_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("198.51.100.5", 1)),
        base_url="http://testserver",
    )


async def test_fastapi_tiers() -> None:
    example = load("fastapi_tiers")
    clock = FakeClock()
    async with asgi(example.create_app(clock=clock)) as c:
        for key, allowed in (("key-free", 5), ("key-pro", 10), ("key-enterprise", 20)):
            codes = [
                (await c.get("/search", headers={"X-API-Key": key})).status_code for _ in range(20)
            ]
            assert codes == [200] * allowed + [429] * (20 - allowed), key
        r = await c.get("/search", headers={"X-API-Key": "key-pro"})
        assert r.headers["Retry-After"] == "1"  # pro: 10/second binds first
        assert r.headers["RateLimit-Policy"] == '"50-per-60s";q=50;w=60, "10-per-1s";q=10;w=1'
        # no key: the free plan, keyed by client address
        assert [(await c.get("/search")).status_code for _ in range(6)] == [200] * 5 + [429]
        for _ in range(10):
            assert (await c.get("/health")).status_code == 200
        clock.advance(60)
        ent = {"X-API-Key": "key-enterprise"}
        r = await c.post("/reports?pages=4000", headers=ent)
        assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "1000"
        assert (await c.post("/reports?pages=1001", headers=ent)).status_code == 429
        assert (await c.post("/reports?pages=x", headers=ent)).status_code == 422  # FastAPI's own
        assert (await c.get("/export/csv", headers=ent)).status_code == 200
        assert (await c.get("/export/json", headers=ent)).status_code == 200
        assert (await c.get("/export/csv", headers=ent)).status_code == 429
        r = await c.get("/me", headers=ent)
        assert r.json() == {"tenant": "initech", "plan": "enterprise"}
        assert r.headers["X-RateLimit-Limit"] == "3"


def test_flask_app() -> None:
    example = load("flask_app")
    c = example.create_app(clock=FakeClock()).test_client()
    alice = {"Authorization": "Bearer token-alice"}
    assert c.get("/", headers=alice).json == {"user": "alice"}
    assert c.get("/health").headers.get("RateLimit") is None
    codes = [c.post(p).status_code for p in ("/login", "/password-reset", "/login", "/login")]
    assert codes == [200, 200, 200, 429]
    r = c.post("/batch", headers={"X-Batch-Size": "45"})
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "5"
    assert c.post("/batch", headers={"X-Batch-Size": "6"}).status_code == 429
    r = c.get("/", headers={"Authorization": "Bearer token-bob"})
    assert r.headers["RateLimit-Policy"].count("q=") == 2  # both default limits reported


@pytest.fixture
def django_example() -> Iterator[ModuleType]:
    import django.conf
    from django.utils.functional import empty

    import ratekeeper.integrations.django as rk_django

    settings = django.conf.settings
    saved = settings._wrapped
    settings._wrapped = empty
    rk_django._engine = None
    try:
        yield load("django_app")
    finally:
        settings._wrapped = saved
        rk_django._engine = None
        sys.modules.pop("ratekeeper_example_django_app", None)


def test_django_app(django_example: ModuleType) -> None:
    from django.test import Client, override_settings

    config = {**django_example.RATEKEEPER, "CLOCK": FakeClock()}
    with override_settings(RATEKEEPER=config):
        c = Client()
        r = c.get("/search/?q=x", headers={"X-Cost": "8"})
        assert r.status_code == 200 and r.json() == {"q": "x"}
        assert r["X-RateLimit-Remaining"] == "2"
        assert c.get("/search/", headers={"X-Cost": "3"}).status_code == 429
        codes = [c.post(u).status_code for u in ["/upload/image/", "/upload/file/"] * 3]
        assert codes == [200] * 5 + [429]
        assert all(c.get("/health/").status_code == 200 for _ in range(70))
        r = c.get("/")
        assert r.json() == {"hello": "world"} and r["X-RateLimit-Limit"] == "60"
        # the first request counted against the default 60/minute: exempt /health/ and the
        # views with their own @ratelimit are not counted against the defaults
        assert r["X-RateLimit-Remaining"] == "59"
        assert [c.get("/").status_code for _ in range(60)].count(429) == 1


async def test_aiohttp_app() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    example = load("aiohttp_app")
    async with TestClient(TestServer(example.create_app(clock=FakeClock()), host="127.0.0.1")) as c:
        r = await c.get("/", headers={"X-API-Key": "k1"})
        assert r.status == 200 and r.headers["X-RateLimit-Limit"] == "30"
        r = await c.post("/ingest", headers={"X-Events": "99"})
        assert r.status == 200 and r.headers["X-RateLimit-Remaining"] == "1"
        assert (await c.post("/ingest", headers={"X-Events": "2"})).status == 429
        codes = [(await c.get(p)).status for p in ["/search", "/suggest"] * 3]
        assert codes == [200] * 5 + [429]
        assert all([(await c.get("/health")).status == 200 for _ in range(40)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("script", "probe"),
    [
        ("fastapi_tiers", "/health"),
        ("flask_app", "/health"),
        ("django_app", "/health/"),
        ("aiohttp_app", "/health"),
    ],
)
def test_example_runs_as_a_script(script: str, probe: str) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / f"{script}.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    err = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"{script} did not start: {err[-2000:]}")
                time.sleep(0.1)  # waiting for a server to start, not rate logic
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        assert "RateLimit-Policy" in r.headers or r.status_code == 404
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
