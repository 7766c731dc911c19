"""A private redis-server on a free loopback port, for runs that are given no Redis URL."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.ports import free_port


class RedisServer:
    """``with RedisServer() as url:`` starts redis-server (no persistence) and stops it after."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process: subprocess.Popen[bytes] | None = None
        self.folder: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> str:
        if not Path(self.binary).exists():
            raise RuntimeError("redis-server not found; install it or pass --redis-url")
        self.folder = tempfile.TemporaryDirectory(prefix="ratekeeper-bench-")
        port = free_port()
        options = ["--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        options += ["--appendonly", "no", "--protected-mode", "no", "--dir", self.folder.name]
        self.process = subprocess.Popen(
            [self.binary, *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers(port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        return f"redis://127.0.0.1:{port}/0"

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
