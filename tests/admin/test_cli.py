"""``ratekeeper serve``, ``inspect`` and ``reset`` as a user runs them: subprocesses, exit codes
and messages, against the real Redis of scripts/test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ratekeeper import Registry

from .conftest import TOKEN

pytestmark = pytest.mark.redis

START_TIMEOUT = 20.0
POLL = 0.05  # seconds between two attempts to reach the starting server (not rate logic)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "RATEKEEPER_ADMIN_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "ratekeeper", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    url = os.environ.get("RATEKEEPER_REDIS_URL")
    assert url, "RATEKEEPER_REDIS_URL is not set: run the suite with scripts/test"
    path = tmp_path / "ratekeeper.toml"
    path.write_text(
        f'[stores.main]\nurl = "{url}"\n\n[limiters.api]\nlimits = "5/minute"\nstore = "main"\n'
    )
    return path


@pytest.mark.parametrize("command", ["serve", "inspect", "reset"])
def test_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert f"usage: ratekeeper {command}" in result.stdout
    assert "Exit codes" in " ".join(result.stdout.split())


def test_serve_needs_a_token_from_the_environment_or_a_file(config: Path, tmp_path: Path) -> None:
    missing = run("serve", "--config", str(config))
    assert missing.returncode == 1
    assert "no admin token: set $RATEKEEPER_ADMIN_TOKEN or pass --token-file" in missing.stderr
    on_argv = run("serve", "--config", str(config), "--token", TOKEN)
    assert on_argv.returncode == 2 and "unrecognized arguments: --token" in on_argv.stderr
    unreadable = run("serve", "--token-file", str(tmp_path / "nope"))
    assert unreadable.returncode == 1 and "cannot read the token file" in unreadable.stderr


def test_serve_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[limiters.api]\nlimts = "5/minute"\n')
    result = run("serve", "--config", str(bad), env={"RATEKEEPER_ADMIN_TOKEN": TOKEN})
    assert result.returncode == 1
    assert "unknown field 'limts' (did you mean 'limits'?)" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_the_api_and_decisions_then_stops_cleanly(
    config: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ratekeeper",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--token-file",
            str(token_file),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=base, timeout=5) as client:
            while True:
                try:
                    client.get("/")
                    break
                except httpx.TransportError:
                    assert process.poll() is None, process.communicate()
                    assert time.monotonic() < deadline, "ratekeeper serve did not start"
                    time.sleep(POLL)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert client.get("/limiters").status_code == 401
            listed = client.get("/limiters", headers=auth).json()["limiters"]
            assert [(e["name"], e["settings"]["limits"]) for e in listed] == [("api", "5/60s")]
            key = f"cli-{uuid.uuid4().hex}"
            check = client.post("/v1/check", json={"limiter": "api", "key": key}, headers=auth)
            assert check.status_code == 200 and check.json()["remaining"] == 4
            assert check.headers["X-RateLimit-Remaining"] == "4"
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "limiters: api" in err


def test_inspect_and_reset_a_key(config: Path) -> None:
    key = f"cli-{uuid.uuid4().hex}"
    registry = Registry(discover=False)
    registry.load_config(config)
    limiter = registry.get_limiter("api")
    try:
        limiter.hit(key)
        shown = run("inspect", "api", key, "--config", str(config))
        assert shown.returncode == 0, shown.stderr
        assert "next hit:    allowed (cost 1)" in shown.stdout
        assert "remaining:   3 of 5 (5/60s)" in shown.stdout
        assert limiter.peek(key).remaining == 3  # inspect consumed nothing
        big = run("inspect", "api", key, "--config", str(config), "--cost", "9")
        assert "next hit:    denied (cost 9)" in big.stdout and "retry_after: never" in big.stdout
        reset = run("reset", "api", key, "--config", str(config))
        assert reset.returncode == 0 and reset.stdout == f"reset api {key}\n"
        assert limiter.peek(key).remaining == 4
    finally:
        registry.close()


def test_inspect_errors_name_the_problem(config: Path, tmp_path: Path) -> None:
    unknown = run("inspect", "nope", "k", "--config", str(config))
    assert unknown.returncode == 1
    assert "ratekeeper inspect: unknown limiter 'nope'" in unknown.stderr
    assert "known limiters: 'api'" in unknown.stderr
    down = tmp_path / "down.toml"
    down.write_text(
        '[stores.main]\nurl = "redis://127.0.0.1:1/0"\n\n'
        '[limiters.api]\nlimits = "5/minute"\nstore = "main"\n'
    )
    unreachable = run("reset", "api", "k", "--config", str(down))
    assert unreachable.returncode == 1 and "ratekeeper reset:" in unreachable.stderr
    usage = run("inspect", "api")
    assert usage.returncode == 2 and "the following arguments are required: key" in usage.stderr
    memory = tmp_path / "memory.toml"
    memory.write_text('[limiters.local]\nlimits = "5/minute"\n')
    note = run("inspect", "local", "k", "--config", str(memory))
    assert note.returncode == 0 and "in-process memory store" in note.stderr
