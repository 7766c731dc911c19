"""Shared helpers for the web-integration tests."""

from __future__ import annotations

from ratekeeper import Decision, StoreUnavailable
from ratekeeper.stores import Rule


class DownStore:
    """A synchronous store whose server is down: every call raises `StoreUnavailable`."""

    def _down(self, *args: object) -> None:
        raise StoreUnavailable("connection refused (test outage)")

    def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        raise StoreUnavailable("connection refused (test outage)")

    peek = hit

    def reset(self, key: str, rule: Rule) -> None:
        self._down()

    def acquire_lease(self, key: str, lease_id: str, limit: int, ttl: float, now: float) -> float:
        raise StoreUnavailable("connection refused (test outage)")

    def release_lease(self, key: str, lease_id: str, now: float) -> None:
        self._down()

    def ping(self) -> None:
        self._down()

    def close(self) -> None:
        pass


class AsyncDownStore:
    """The asyncio twin of `DownStore`."""

    async def hit(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        raise StoreUnavailable("connection refused (test outage)")

    async def peek(self, key: str, rule: Rule, cost: float, now: float) -> Decision:
        raise StoreUnavailable("connection refused (test outage)")

    async def reset(self, key: str, rule: Rule) -> None:
        raise StoreUnavailable("connection refused (test outage)")

    async def acquire_lease(
        self, key: str, lease_id: str, limit: int, ttl: float, now: float
    ) -> float:
        raise StoreUnavailable("connection refused (test outage)")

    async def release_lease(self, key: str, lease_id: str, now: float) -> None:
        raise StoreUnavailable("connection refused (test outage)")

    async def ping(self) -> None:
        raise StoreUnavailable("connection refused (test outage)")

    async def close(self) -> None:
        pass


TIERS = {"free": "2/minute", "pro": "5/minute", "enterprise": None}


def tier_of(api_key: str | None) -> str:
    """The demo tenant directory the tests share: key prefix names the tier."""
    return (api_key or "free").split("-")[0] if api_key else "free"


import pytest  # noqa: E402

from ratekeeper.integrations.keys import forget_warnings  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    """Each test sees its own once-a-minute warnings."""
    forget_warnings()
