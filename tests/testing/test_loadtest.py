"""``ratekeeper loadtest`` against a local server on 127.0.0.1 that enforces its own limit."""

from __future__ import annotations

import socket

import pytest

from ratekeeper.cli import main
from ratekeeper.errors import ConfigError
from ratekeeper.loadtest import MAX_CONCURRENCY, loadtest
from tests.clients.upstream import SERVICE_TIME, Upstream


@pytest.fixture
def upstream():
    server = Upstream(quota=10)
    yield server
    server.close()


def test_status_counts_and_latency_percentiles(upstream: Upstream) -> None:
    result = loadtest(upstream.url, requests=40, concurrency=8)
    assert sum(result.statuses.values()) == 40 and not result.errors
    assert result.statuses[200] >= 10 and result.statuses[429] > 0
    assert result.statuses == upstream.statuses
    assert SERVICE_TIME <= result.percentile(50) <= result.percentile(99)
    assert len(result.latencies) == 40


def test_cli_report(upstream: Upstream, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", upstream.url, "--requests", "12", "--concurrency", "3"]) == 0
    out = capsys.readouterr().out
    assert f"12 requests to {upstream.url} in" in out
    assert "  200: " in out and "latency: p50 " in out and "p99 " in out


def test_bounds_and_unreachable_servers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        loadtest("http://127.0.0.1:1/", 10, MAX_CONCURRENCY + 1)
    assert main(["loadtest", "ftp://127.0.0.1/", "--requests", "1"]) == 1
    assert main(["loadtest", "http://127.0.0.1/", "--requests", "0"]) == 1
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = loadtest(f"http://127.0.0.1:{port}/", requests=3, concurrency=2)
    assert result.errors == {"ConnectionRefusedError": 3} and not result.statuses
