"""The example applications of examples/ (docs/examples.md): each driven in-process on a fake
clock, and the runnable ones started as scripts the way their "try it" line says."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from ratekeeper import AsyncRateLimiter
from ratekeeper.testing import FakeClock

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# A memory-store key (state, key string, dict slot) of the IoT example stays under this; the
# measured figure is about 170 bytes. Far above it means the store keeps something per key it
# should not.
MAX_BYTES_PER_KEY = 400
SERVE_TIMEOUT = 20.0  # seconds for `python examples/x.py` to start answering


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"rk_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_try_it_line() -> None:
    for example in EXAMPLES.glob("*.py"):
        assert "Try it:" in example.read_text(), example.name


async def test_webhook_processor_paces_each_customer_on_its_own_budget() -> None:
    example = load("webhook_processor")
    clock = FakeClock()
    sent: dict[str, list[float]] = {}
    order: list[str] = []

    async def deliver(customer: str, event: dict[str, object]) -> None:
        sent.setdefault(customer, []).append(clock() - 1_000_000)
        order.append(customer)

    limiter = AsyncRateLimiter(example.RATE, clock=clock)
    processor = example.WebhookProcessor(deliver, limiter=limiter)
    for n in range(12):
        processor.submit("acme", {"id": n})
    processor.submit("globex", {"id": 0})
    await processor.drain()
    assert len(sent["acme"]) == 12
    # a burst of 5, then one every 0.2 s (5/second), exactly: acquire sleeps retry_after
    assert [round(t, 3) for t in sent["acme"]] == [0.0] * 5 + [
        round(0.2 * k, 3) for k in range(1, 8)
    ]
    # globex is not queued behind acme's backlog: it goes out while acme waits for its 6th slot
    assert order.index("globex") <= 5
    assert all(worker.done() for worker in processor.workers)


def test_iot_ingestion_measures_memory_per_key_and_frees_quiet_devices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = load("iot_ingestion").main(["--devices", "5000"])
    assert report.admitted == 5000
    assert report.flood_admitted == 59  # 60 a minute, one reading already sent
    assert 0 < report.bytes_per_key < MAX_BYTES_PER_KEY
    assert report.bytes_after_quiet < report.bytes_per_key * 100  # the 5000 states are gone
    assert "memory per device key:" in capsys.readouterr().out


async def test_api_gateway_chains_global_tenant_and_route_limits() -> None:
    example = load("api_gateway")
    app = example.create_app(clock=FakeClock())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        acme, hooli = {"X-Tenant": "acme"}, {"X-Tenant": "hooli"}
        codes = [(await client.get("/reports/q1", headers=acme)).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]  # the route's 5/minute for acme
        denied = await client.get("/reports/q1", headers=acme)
        assert denied.json()["limit"] == "5/60s" and denied.headers["Retry-After"] == "12"
        assert (await client.get("/search/q", headers=acme)).status_code == 200  # other route
        # hooli's free plan (20/minute) binds before its routes: 5 reports, then 15 searches
        for _ in range(5):
            assert (await client.get("/reports/q", headers=hooli)).status_code == 200
        codes = [(await client.get("/search/q", headers=hooli)).status_code for _ in range(16)]
        assert codes == [200] * 15 + [429]
        assert (await client.get("/search/q", headers=hooli)).json()["limit"] == "20/60s"
        # a denial consumed nothing anywhere: acme's plan still had room for all of the above
        assert (await client.get("/search/q", headers={"X-Tenant": "nobody"})).status_code == 401
        assert (await client.get("/billing/q", headers=acme)).status_code == 404


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gateway_server() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "api_gateway.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=SERVE_TIMEOUT)


def test_api_gateway_serves_as_its_try_it_line_says(gateway_server: str) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT
    while True:
        try:
            response = httpx.get(f"{gateway_server}/search/items", headers={"X-Tenant": "acme"})
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)  # waiting for a subprocess to listen, not timing logic
    assert response.status_code == 200 and "RateLimit" in response.headers


def test_iot_ingestion_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "iot_ingestion.py"), "--devices", "2000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "memory per device key:" in result.stdout


def test_webhook_processor_main_delivers_every_event() -> None:
    example = load("webhook_processor")
    sent = asyncio.run(example.main(rate="100/second"))  # the pacing is the test above's
    assert len(sent["acme"]) == 30 and len(sent["globex"]) == 3
