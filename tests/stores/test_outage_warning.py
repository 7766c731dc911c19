"""The warning a dead store causes is written once, not wrapped in itself (issue 9, item 19)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from ratekeeper import AsyncRateLimiter, RateLimiter


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


@pytest.mark.parametrize("scheme", ["redis", "nats", "postgresql"])
async def test_an_outage_warning_names_the_failure_once(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = dead_port()
    url = {
        "redis": f"redis://127.0.0.1:{port}/0",
        "nats": f"nats://127.0.0.1:{port}",
        "postgresql": f"postgresql://u:p@127.0.0.1:{port}/db",
    }[scheme]
    limiter = AsyncRateLimiter("5/second", store=url, on_store_error="allow")
    with caplog.at_level(logging.WARNING, logger="ratekeeper"):
        decisions = await asyncio.gather(*[limiter.hit("k") for _ in range(5)])
    await limiter.close()
    assert all(d.allowed and d.fallback for d in decisions)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ratekeeper"]
    assert len(warnings) == 1, warnings  # once a minute, not per request
    assert warnings[0].count("unavailable") == 2, warnings  # "store unavailable (x unavailable: …)"
    assert warnings[0].count("StoreUnavailable") == 0, warnings


def test_the_sync_warning_too(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(
        "5/second", store=f"redis://127.0.0.1:{dead_port()}/0", on_store_error="deny"
    )
    with caplog.at_level(logging.WARNING, logger="ratekeeper"):
        assert not limiter.hit("k") and not limiter.hit("k")
    limiter.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "ratekeeper"]
    assert len(warnings) == 1 and warnings[0].count("unavailable") == 2, warnings
