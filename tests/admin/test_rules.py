"""Rules changed through the admin API reach another process within a few seconds, and a
process started later starts from them: two registries in two processes against the real
Redis, PostgreSQL and NATS servers of scripts/test."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ratekeeper import Registry
from ratekeeper.admin import AdminApp, RuleSync, create_admin_app
from ratekeeper.admin.rules import POLL_INTERVAL, rule_store

from .conftest import AUTH, TOKEN

WORKER = Path(__file__).with_name("rules_worker.py")
# A change is seen by the other process within one poll interval plus its read; "a few
# seconds" is the promise, this is the bound held to.
PROPAGATION_BOUND = 3 * POLL_INTERVAL
START_BOUND = 20.0  # seconds for a fresh interpreter to import and print its first line

BACKENDS = [
    pytest.param("RATEKEEPER_REDIS_URL", marks=pytest.mark.redis, id="redis"),
    pytest.param("RATEKEEPER_POSTGRES_URL", marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("RATEKEEPER_NATS_URL", marks=pytest.mark.nats, id="nats"),
]


class Worker:
    """A rules_worker.py process and the lines it prints."""

    def __init__(self, url: str, name: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), url, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next(self, timeout: float) -> Any:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            stderr = ""
            if self.process.poll() is not None and self.process.stderr is not None:
                stderr = self.process.stderr.read()
            raise AssertionError(f"the worker printed nothing in {timeout} s {stderr}") from None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    variable = request.param
    assert variable in os.environ, f"{variable} is not set: run the suite with scripts/test"
    return os.environ[variable]


@pytest.fixture
def name() -> str:
    return f"rules-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(url: str) -> Iterator[AdminApp]:
    registry = Registry(discover=False)
    registry.configure_store("main", url)
    app = create_admin_app(registry, token=TOKEN)
    yield app
    app.close()


@pytest.fixture
async def client(admin: AdminApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=admin)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c:
        yield c


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def seen_within(worker: Worker, expected: Any, bound: float) -> float:
    """Seconds until ``worker`` prints ``expected`` (at most ``bound``)."""
    start = time.monotonic()
    while True:
        left = bound - (time.monotonic() - start)
        assert left > 0, f"not seen within {bound} s: {expected!r}"
        line = worker.next(left)
        if line == expected or (expected is not None and line and line["limits"] == expected):
            return time.monotonic() - start


async def test_changes_reach_another_process_and_a_restarted_one_starts_from_them(
    url: str, name: str, admin: AdminApp, client: httpx.AsyncClient, workers: list[Worker]
) -> None:
    other = Worker(url, name)
    workers.append(other)
    assert other.next(START_BOUND) is None  # running, the limiter not defined yet

    created = await client.put(f"/limiters/{name}", json={"limits": "7/minute", "store": "main"})
    assert created.status_code == 201, created.text
    assert created.json()["shared"] is True
    first_version = created.json()["version"]
    assert isinstance(first_version, int)
    elapsed = seen_within(other, "7/60s", PROPAGATION_BOUND)
    print(f"\n{url.split(':')[0]}: created, seen by the other process after {elapsed:.2f} s")

    changed = await client.put(
        f"/limiters/{name}",
        json={"limits": "9/minute", "algorithm": "sliding_window", "store": "main"},
    )
    assert changed.status_code == 200
    assert changed.json()["version"] > first_version
    elapsed = seen_within(other, "9/60s", PROPAGATION_BOUND)
    print(f"changed, seen after {elapsed:.2f} s")

    restarted = Worker(url, name)
    workers.append(restarted)
    settings = restarted.next(START_BOUND)
    assert settings["limits"] == "9/60s"  # its first look, right after start
    assert settings["algorithm"] == "sliding_window"
    assert settings["store"] == "shared"  # the store's local name in that process

    deleted = await client.delete(f"/limiters/{name}")
    assert deleted.status_code == 200
    for worker in (other, restarted):
        elapsed = seen_within(worker, None, PROPAGATION_BOUND)
    print(f"deleted, seen after {elapsed:.2f} s")
    assert name not in admin.registry.list_limiters()


def test_a_process_applies_stored_rules_at_start_even_over_its_file(url: str, name: str) -> None:
    writer = Registry(discover=False)
    writer.configure_store("main", url)
    writer.configure_limiter(name, "1/second", store="main")
    sync = RuleSync(writer)
    sync.put(name, {"limits": "42/hour", "store": "main"})
    sync.close()

    reader = Registry(discover=False)
    reader.configure_store("main", url)
    reader.configure_limiter(name, "1/second", store="main")  # what its file says
    later = RuleSync(reader)
    later.load()
    assert reader.list_limiters()[name]["limits"] == "42/3600s"
    later.delete(name)
    assert name not in reader.list_limiters()
    later.close()

    fresh = Registry(discover=False)
    fresh.configure_store("main", url)
    fresh.configure_limiter(name, "1/second", store="main")
    last = RuleSync(fresh)
    last.load()  # the tombstone removes what the file defines
    last.close()
    assert name not in fresh.list_limiters()


def test_an_unreachable_rules_store_changes_nothing(name: str) -> None:
    registry = Registry(discover=False)
    registry.configure_store("gone", "redis://127.0.0.1:1/0")
    sync = RuleSync(registry)
    sync.load()  # logged, retried at the next round; nothing raised
    from ratekeeper import StoreUnavailable

    with pytest.raises(StoreUnavailable):
        sync.put(name, {"limits": "5/second", "store": "gone"})
    assert name not in registry.list_limiters()
    sync.close()


def test_only_shared_stores_keep_rules() -> None:
    assert rule_store(None) is None
    assert rule_store("memory://") is None
    assert rule_store("redis+cluster://127.0.0.1:7000") is None
