"""Shared fixtures of the admin tests: a registry with a few limiters on a FakeClock, the admin
app built on it, and an httpx client speaking ASGI to it (no server, no sleeping)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from ratekeeper import Registry
from ratekeeper.admin import AdminApp, create_admin_app
from ratekeeper.testing import FakeClock

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_000_000.0)


@pytest.fixture
def registry(clock: FakeClock) -> Registry:
    registry = Registry(discover=False)
    registry.configure_limiter("api", "3/minute", clock=clock)
    registry.configure_limiter("login", "5/minute;20/hour", algorithm="sliding_window", clock=clock)
    return registry


@pytest.fixture
def app(registry: Registry) -> Iterator[AdminApp]:
    app = create_admin_app(registry, token=TOKEN)
    yield app
    app.close()


@pytest.fixture
async def client(app: AdminApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=AUTH
    ) as client:
        yield client
