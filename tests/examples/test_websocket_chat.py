"""examples/websocket_chat.py: a chat room behind WebSocketRateLimitMiddleware, driven through
Starlette's TestClient (one event loop for every connection, so the room's broadcast is real)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ratekeeper.testing import FakeClock

from .test_examples import load

FLOODER = ("203.0.113.5", 50000)
NEIGHBOUR = ("198.51.100.8", 50000)


@pytest.fixture
def example() -> ModuleType:
    return load("websocket_chat")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(example: ModuleType, clock: FakeClock) -> Any:
    return example.create_app(clock=clock)


def client(app: Any, address: tuple[str, int]) -> TestClient:
    return TestClient(app, client=address)


def test_a_flood_closes_only_the_flooders_connection_with_1008(app: Any) -> None:
    with TestClient(app) as test_client:  # one event loop for both connections
        with test_client.websocket_connect("/chat?name=bob") as bob:
            assert bob.receive_text() == "* bob joined"
            with test_client.websocket_connect("/chat?name=eve") as eve:
                assert eve.receive_text() == "* eve joined"
                assert bob.receive_text() == "* eve joined"
                for n in range(5):  # the budget: 5 messages in 10 seconds
                    eve.send_text(f"spam {n}")
                    assert eve.receive_text() == f"eve: spam {n}"
                    assert bob.receive_text() == f"eve: spam {n}"
                eve.send_text("spam 5")
                with pytest.raises(WebSocketDisconnect) as closed:
                    eve.receive_text()
            assert closed.value.code == 1008
            assert closed.value.reason == (
                "rate limit exceeded: messages (5-per-10s); retry after 2s"
            )
            assert bob.receive_text() == "* eve left"  # the sixth message never reached the room
            bob.send_text("quiet now")  # the other member's connection is untouched
            assert bob.receive_text() == "bob: quiet now"
        with test_client.websocket_connect("/chat?name=eve") as eve:  # a new connection:
            assert eve.receive_text() == "* eve joined"  # a budget of its own
            eve.send_text("hello again")
            assert eve.receive_text() == "eve: hello again"


def test_connections_per_client_address(app: Any, clock: FakeClock) -> None:
    # one connection at a time: each client's event loop serves only its own
    with client(app, FLOODER) as flooder_client, client(app, NEIGHBOUR) as neighbour_client:
        for n in range(10):  # 10 connections a minute per address
            with flooder_client.websocket_connect(f"/chat?name=eve{n}") as eve:
                assert eve.receive_text() == f"* eve{n} joined"
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            flooder_client.websocket_connect("/chat?name=eve") as eve,
        ):
            eve.receive_text()  # accepted, then closed at once
        assert closed.value.code == 1008
        assert closed.value.reason == (
            "rate limit exceeded: connections (10-per-60s); retry after 6s"
        )
        with neighbour_client.websocket_connect("/chat?name=bob") as bob:  # its own budget
            assert bob.receive_text() == "* bob joined"
        clock.advance(6)
        with flooder_client.websocket_connect("/chat?name=eve") as eve:
            assert eve.receive_text() == "* eve joined"
