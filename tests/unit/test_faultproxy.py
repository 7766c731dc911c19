"""The fault-injection proxy does what each mode says, against a tiny local echo server."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faultproxy import FaultProxy

IO_TIMEOUT = 2.0  # seconds a socket call may take when data is expected
SILENCE = 0.3  # seconds of waiting that show nothing is delivered
LATENCY = 0.1  # seconds per direction for the latency mode


class _EchoHandler(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        with self.server.lock:
            self.server.open_connections += 1
        try:
            while data := self.request.recv(4096):
                with self.server.lock:
                    self.server.received += data
                self.request.sendall(data)
        except OSError:
            pass
        finally:
            with self.server.lock:
                self.server.open_connections -= 1


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.lock = threading.Lock()
        self.received = b""
        self.open_connections = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


def connect(proxy: FaultProxy) -> socket.socket:
    s = socket.create_connection(proxy.address, timeout=IO_TIMEOUT)
    s.settimeout(IO_TIMEOUT)
    return s


def round_trip(s: socket.socket, data: bytes = b"ping") -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def wait_until(predicate: object, timeout: float = IO_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        assert round_trip(s, b"hello") == b"hello"
        assert round_trip(s, b"x" * 100_000) == b"x" * 100_000


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        round_trip(s)
        proxy.set_mode("latency", latency=LATENCY)
        start = time.monotonic()
        assert round_trip(s) == b"ping"
        elapsed = time.monotonic() - start
    assert 2 * LATENCY <= elapsed < 2 * LATENCY + 1.0


def test_latency_pipelines_chunks(proxy: FaultProxy) -> None:
    proxy.set_mode("latency", latency=LATENCY)
    with connect(proxy) as s:
        start = time.monotonic()
        for i in range(5):  # five chunks sent at once arrive ~one latency later, not five
            s.sendall(b"%d" % i)
            time.sleep(0.01)
        got = b""
        while len(got) < 5:
            got += s.recv(16)
        elapsed = time.monotonic() - start
    assert got == b"01234"
    assert elapsed < 4 * LATENCY + 0.5


def test_blackhole_holds_data_on_old_and_new_connections(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    old = connect(proxy)
    round_trip(old)
    proxy.set_mode("blackhole")
    new = connect(proxy)  # new connections are accepted, and stay open
    for s in (old, new):
        s.settimeout(SILENCE)
        s.sendall(b"lost?")
        with pytest.raises(TimeoutError):
            s.recv(16)
    assert echo.received == b"ping"  # nothing reached the server
    proxy.set_mode("pass")
    with connect(proxy) as fresh:
        assert round_trip(fresh, b"back") == b"back"
    old.settimeout(IO_TIMEOUT)
    assert old.recv(16) == b"lost?"  # held, then delivered: like a frozen server that resumes
    old.close()
    new.close()


def test_reset_kills_old_and_new_connections(proxy: FaultProxy) -> None:
    old = connect(proxy)
    round_trip(old)
    proxy.set_mode("reset")
    with pytest.raises(ConnectionResetError):
        old.recv(16)
    old.close()
    with pytest.raises(ConnectionResetError), connect(proxy) as new:  # at connect or first read
        new.recv(16)
    proxy.set_mode("pass")
    with connect(proxy) as s:
        assert round_trip(s) == b"ping"


def test_half_close_gives_the_client_eof_while_the_server_stays(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    old = connect(proxy)
    round_trip(old)
    proxy.set_mode("half_close")
    assert old.recv(16) == b""  # EOF
    old.sendall(b"still")  # the client's writes still reach the server
    assert wait_until(lambda: echo.received == b"pingstill")
    assert echo.open_connections == 1
    with connect(proxy) as new:
        assert new.recv(16) == b""
    proxy.set_mode("pass")
    with connect(proxy) as s:
        assert round_trip(s) == b"ping"
    old.close()


def test_a_dead_target_resets_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with FaultProxy("127.0.0.1", port) as p, pytest.raises(ConnectionResetError), connect(p) as s:
        s.recv(16)


def test_close_closes_every_connection(echo: EchoServer) -> None:
    p = FaultProxy("127.0.0.1", echo.port)
    s = connect(p)
    round_trip(s)
    assert p.connection_count() == 1
    p.close()
    with pytest.raises(ConnectionResetError):
        s.recv(16)
    s.close()
    assert wait_until(lambda: echo.open_connections == 0)
    with pytest.raises(OSError):
        socket.create_connection(p.address, timeout=IO_TIMEOUT)
    p.close()  # twice is fine


def test_unknown_mode_is_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        proxy.set_mode("frozen")  # type: ignore[arg-type]
