"""WebSockets: connections per client and messages per connection, closed with 1008 and a
reason; driven through Starlette's TestClient (Starlette and FastAPI apps)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from ratekeeper import Decision, Limit
from ratekeeper.integrations import header
from ratekeeper.integrations.websockets import (
    POLICY_VIOLATION,
    WebSocketRateLimitMiddleware,
    close_reason,
)
from ratekeeper.testing import FakeClock

from .conftest import AsyncDownStore

seen: list[Any] = []  # what the application saw, per test


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"echo {text}")
    except WebSocketDisconnect as exc:
        seen.append(("disconnect", exc.code))
        await websocket.send_text("after the close")  # dropped by the middleware, no error


def starlette_app(**options: Any) -> tuple[TestClient, FakeClock]:
    seen.clear()
    clock = FakeClock()
    app = Starlette(routes=[WebSocketRoute("/ws", echo), WebSocketRoute("/health", echo)])
    app.add_middleware(WebSocketRateLimitMiddleware, clock=clock, **options)
    return TestClient(app), clock


def refused(client: TestClient, path: str = "/ws", **kwargs: Any) -> WebSocketDisconnect:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect(path, **kwargs) as ws,
    ):
        ws.receive_text()  # the close arrives right after the accept
    return closed.value


def test_messages_per_connection_close_with_1008_and_a_reason() -> None:
    client, _ = starlette_app(messages="3/second")
    with client.websocket_connect("/ws") as ws:
        for n in range(3):
            ws.send_text(str(n))
            assert ws.receive_text() == f"echo {n}"
        ws.send_text("one too many")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == POLICY_VIOLATION == 1008
    assert closed.value.reason == "rate limit exceeded: messages (3-per-1s); retry after 1s"
    assert seen == [("disconnect", 1008)]  # the application saw the close, and its late send
    # went nowhere
    with client.websocket_connect("/ws") as ws:  # a new connection: a budget of its own
        ws.send_text("again")
        assert ws.receive_text() == "echo again"


def test_messages_refill_over_time() -> None:
    client, clock = starlette_app(messages="2/second")
    with client.websocket_connect("/ws") as ws:
        for n in range(6):  # 2 a second, forever
            ws.send_text(str(n))
            assert ws.receive_text() == f"echo {n}"
            if n % 2:
                clock.advance(1)


def test_connections_per_client() -> None:
    client, clock = starlette_app(connections="2/minute")
    for _ in range(2):
        with client.websocket_connect("/ws") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "echo hi"
    closed = refused(client)
    assert closed.code == 1008
    assert closed.reason == "rate limit exceeded: connections (2-per-60s); retry after 30s"
    other = TestClient(client.app, client=("198.51.100.9", 1234))  # another client: its own
    with other.websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "echo hi"
    clock.advance(30)
    with client.websocket_connect("/ws") as ws:
        ws.send_text("back")
        assert ws.receive_text() == "echo back"


def test_connections_keyed_by_a_header_exempt_paths_and_http_untouched() -> None:
    client, _ = starlette_app(
        connections=Limit(1, per=60), key=header("x-tenant"), exempt_paths=["/health"]
    )
    with client.websocket_connect("/ws", headers={"x-tenant": "a"}):
        pass
    assert refused(client, headers={"x-tenant": "a"}).code == 1008
    with client.websocket_connect("/ws", headers={"x-tenant": "b"}):
        pass
    for _ in range(3):
        with client.websocket_connect("/health"):
            pass
    assert client.get("/nothing").status_code == 404  # HTTP passes straight through


def test_a_dead_store_follows_on_store_error() -> None:
    client, _ = starlette_app(connections="1/minute", store=AsyncDownStore())
    for _ in range(2):  # "allow" by default: a dead store does not take the site down
        with client.websocket_connect("/ws"):
            pass
    client, _ = starlette_app(connections="1/minute", store=AsyncDownStore(), on_store_error="deny")
    assert refused(client).reason == (
        "rate limit exceeded: connections (1-per-60s); retry after 1s"
    )


def test_fastapi_app_and_close_reason_bounds() -> None:
    clock = FakeClock()
    app = FastAPI()

    @app.websocket("/chat")
    async def chat(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())

    app.add_middleware(
        WebSocketRateLimitMiddleware, connections="5/minute", messages="1/second", clock=clock
    )
    client = TestClient(app)
    with client.websocket_connect("/chat") as ws:
        ws.send_text("a")
        assert ws.receive_text() == "A"
        ws.send_text("b")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008
    # the longest limit name there is: the reason still fits a close frame
    limit = Limit(2**53, per=315_359_999.999)
    denial = Decision(False, limit.amount, 0, 1e9, 1e9, 0.0, limit)
    assert len(close_reason(denial, "connections").encode()) <= 123
