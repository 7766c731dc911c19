"""StatsdObserver against a real UDP socket: the exact datagrams, and silence on failure."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from ratekeeper import ConfigError, RateLimiter
from ratekeeper.events import Event
from ratekeeper.observability import StatsdObserver
from ratekeeper.testing import FakeClock
from tests.observability.events import event, standard_events

THREADS = 8
RECEIVE_TIMEOUT = 2.0  # seconds: loopback datagrams arrive in microseconds
# A send to nowhere must not hold the caller: the bound for SENDS events, far above what a
# non-blocking sendto costs (microseconds each), far below SENDS blocking DNS or socket waits.
SENDS = 200
NEVER_BLOCKS_BOUND = 0.5


@pytest.fixture
def server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(RECEIVE_TIMEOUT)
    yield sock
    sock.close()


def send(server: socket.socket, events: list[Event], **options: object) -> list[list[str]]:
    """The datagrams (as lists of lines) that ``events`` produce, one per event."""
    port = server.getsockname()[1]
    with StatsdObserver("127.0.0.1", port, **options) as observer:  # type: ignore[arg-type]
        for e in events:
            observer.observe(e)
    return [server.recv(65536).decode().split("\n") for _ in events]


def test_plain_statsd_names_every_measure_with_the_limiter_in_the_path(
    server: socket.socket,
) -> None:
    got = send(server, standard_events())
    assert got == [
        ["ratekeeper.api.decisions.allowed:1|c", "ratekeeper.store.redis:0.100|ms",
         "ratekeeper.api.in_flight:0|g"],
        ["ratekeeper.api.decisions.allowed:1|c", "ratekeeper.store.redis:0.200|ms",
         "ratekeeper.api.in_flight:0|g"],
        ["ratekeeper.api.decisions.allowed:1|c", "ratekeeper.api.near_limit:1|c",
         "ratekeeper.store.redis:3.000|ms", "ratekeeper.api.in_flight:0|g"],
        ["ratekeeper.api.decisions.denied:1|c", "ratekeeper.store.redis:0.400|ms",
         "ratekeeper.api.in_flight:0|g"],
        ["ratekeeper.api.decisions.denied:1|c", "ratekeeper.store.redis:0.400|ms",
         "ratekeeper.api.in_flight:0|g"],
        ["ratekeeper.api.decisions.shadow_denied:1|c", "ratekeeper.store.redis:0.400|ms",
         "ratekeeper.api.in_flight:0|g"],
        ["ratekeeper.api.decisions.error:1|c", "ratekeeper.store.redis:500.000|ms",
         "ratekeeper.api.in_flight:0|g"],
        ["ratekeeper.api.wait:20.000|ms", "ratekeeper.api.in_flight:1|g"],
        ["ratekeeper.api.wait:1500.000|ms", "ratekeeper.api.timeouts:1|c",
         "ratekeeper.api.in_flight:1|g"],
        ["ratekeeper.api.in_flight:0|g"],
    ]  # fmt: skip


def test_dogstatsd_tags_the_limiter_result_and_store(server: socket.socket) -> None:
    got = send(server, standard_events()[2:9], tags="dogstatsd", prefix="app.rk")
    assert got == [
        ["app.rk.decisions.allowed:1|c|#limiter:api,result:allowed",
         "app.rk.near_limit:1|c|#limiter:api", "app.rk.store:3.000|ms|#store:redis",
         "app.rk.in_flight:0|g|#limiter:api"],
        ["app.rk.decisions.denied:1|c|#limiter:api,result:denied",
         "app.rk.store:0.400|ms|#store:redis", "app.rk.in_flight:0|g|#limiter:api"],
        ["app.rk.decisions.denied:1|c|#limiter:api,result:denied",
         "app.rk.store:0.400|ms|#store:redis", "app.rk.in_flight:0|g|#limiter:api"],
        ["app.rk.decisions.shadow_denied:1|c|#limiter:api,result:shadow_denied",
         "app.rk.store:0.400|ms|#store:redis", "app.rk.in_flight:0|g|#limiter:api"],
        ["app.rk.decisions.error:1|c|#limiter:api,result:error",
         "app.rk.store:500.000|ms|#store:redis", "app.rk.in_flight:0|g|#limiter:api"],
        ["app.rk.wait:20.000|ms|#limiter:api", "app.rk.in_flight:1|g|#limiter:api"],
        ["app.rk.wait:1500.000|ms|#limiter:api", "app.rk.timeouts:1|c|#limiter:api",
         "app.rk.in_flight:1|g|#limiter:api"],
    ]  # fmt: skip


def test_names_are_sanitized(server: socket.socket) -> None:
    odd = event(limiter="GET /v1.search|x:y #z", store="re dis", store_seconds=0.001)
    [plain] = send(server, [odd])
    assert plain[0] == "ratekeeper.GET__v1_search_x_y__z.decisions.allowed:1|c"
    assert plain[1] == "ratekeeper.store.re_dis:1.000|ms"
    [dog] = send(server, [odd], tags="dogstatsd")
    assert (
        dog[0] == "ratekeeper.decisions.allowed:1|c|#limiter:GET_/v1.search_x_y__z,result:allowed"
    )
    assert dog[1] == "ratekeeper.store:1.000|ms|#store:re_dis"


def test_the_user_key_is_never_sent(server: socket.socket) -> None:
    got = send(server, standard_events(), tags="dogstatsd")
    assert not any("secret-42" in line for lines in got for line in lines)


def dead_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def test_a_dead_port_raises_nothing_and_blocks_nothing() -> None:
    with StatsdObserver("127.0.0.1", dead_port()) as observer:
        started = time.perf_counter()
        for i in range(SENDS):  # each send draws an ICMP port-unreachable
            observer.observe(standard_events()[i % 10])
        assert time.perf_counter() - started < NEVER_BLOCKS_BOUND


def test_an_unresolvable_host_raises_nothing_and_blocks_nothing() -> None:
    with StatsdObserver("statsd.invalid", 8125) as observer:  # .invalid never resolves (RFC 6761)
        started = time.perf_counter()
        for i in range(SENDS):
            observer.observe(standard_events()[i % 10])
        assert time.perf_counter() - started < NEVER_BLOCKS_BOUND


class FullBuffer:
    def sendto(self, data: bytes, address: object) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    def close(self) -> None:
        pass


def test_a_full_socket_buffer_drops_the_datagram() -> None:
    observer = StatsdObserver("127.0.0.1", dead_port())
    observer.close()
    observer._socket, observer._address = FullBuffer(), ("127.0.0.1", 1)  # type: ignore[assignment]
    observer.observe(event())  # raises nothing


def test_events_after_close_are_dropped(server: socket.socket) -> None:
    observer = StatsdObserver("127.0.0.1", server.getsockname()[1])
    observer.close()
    observer.observe(event())
    server.settimeout(0.05)
    with pytest.raises(TimeoutError):
        server.recv(65536)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="tags"):
        StatsdObserver("127.0.0.1", 8125, tags="influx")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="port"):
        StatsdObserver("127.0.0.1", 0)


def test_through_a_limiter_with_8_threads_every_decision_arrives(server: socket.socket) -> None:
    with StatsdObserver("127.0.0.1", server.getsockname()[1]) as observer:
        limiter = RateLimiter("50/minute", name="api", clock=FakeClock(), observers=[observer])
        per_thread = 10  # 80 small datagrams: well inside the receive buffer
        barrier = threading.Barrier(THREADS)

        def work() -> None:
            barrier.wait()
            for _ in range(per_thread):
                limiter.hit("user:1")

        threads = [threading.Thread(target=work) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    lines = Counter(
        line
        for _ in range(THREADS * per_thread)
        for line in server.recv(65536).decode().split("\n")
        if "|c" in line
    )
    # remaining after the allowed hits runs 49..0; 0..10 are at most 20% of the limit
    assert lines == {
        "ratekeeper.api.decisions.allowed:1|c": 50,
        "ratekeeper.api.decisions.denied:1|c": 30,
        "ratekeeper.api.near_limit:1|c": 11,
    }
