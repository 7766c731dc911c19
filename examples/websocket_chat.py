"""A real-time chat room over WebSockets (FastAPI), rate limited per connection and per client.

Try it:   pip install "ratekeeper[fastapi]" websockets   (websockets: uvicorn's WebSocket support
                                                          and a command-line client)
          python examples/websocket_chat.py              (serves ws://127.0.0.1:8000/chat)
          python -m websockets 'ws://127.0.0.1:8000/chat?name=ann'
          (type six lines within ten seconds: the sixth closes the connection with code 1008
          and "rate limit exceeded: messages (5-per-10s); retry after 2s" or so)

Everything a member sends goes to everyone in the room. `WebSocketRateLimitMiddleware` keeps
two limits in front of the chat, and the chat code knows nothing about them:

- messages: 5 per 10 seconds per connection. The first message over it closes that connection
  with code 1008 (policy violation) and a reason saying when to retry; the room never sees the
  flood, the other members stay connected. A connection's budget lives in this process's memory
  (no store round trip per message) and goes when the connection closes;
- connections: 10 a minute per client address, counted in the store (``store=`` a Redis URL to
  share it between processes), so a reconnect loop does not buy a fresh message budget every
  time. A refused connection is accepted and closed at once with 1008 and the reason, which a
  browser's ``CloseEvent`` shows (a refusal before the accept would be a bare HTTP 403).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from ratekeeper.integrations.websockets import WebSocketRateLimitMiddleware

MESSAGES = "5/10 seconds"  # per connection
CONNECTIONS = "10/minute"  # per client address


class Room:
    """The members of the chat: every message goes to all of them."""

    def __init__(self) -> None:
        self.members: set[WebSocket] = set()

    async def broadcast(self, text: str) -> None:
        for member in list(self.members):
            try:
                await member.send_text(text)
            except (WebSocketDisconnect, RuntimeError):  # gone while we were sending
                self.members.discard(member)


def create_app(store: Any = None, **options: Any) -> FastAPI:
    """Build the app; ``store`` is a URL (``redis://...``) or store object, memory by default.
    Other keywords are the middleware's (``clock=`` in tests)."""
    app = FastAPI()
    room = Room()
    app.state.room = room

    @app.websocket("/chat")
    async def chat(websocket: WebSocket) -> None:
        name = websocket.query_params.get("name", "anonymous")
        await websocket.accept()
        room.members.add(websocket)
        await room.broadcast(f"* {name} joined")
        try:
            async for text in websocket.iter_text():  # ends when the client (or a limit) closes
                await room.broadcast(f"{name}: {text}")
        finally:
            room.members.discard(websocket)
            await room.broadcast(f"* {name} left")

    app.add_middleware(
        WebSocketRateLimitMiddleware,
        connections=CONNECTIONS,
        messages=MESSAGES,
        store=store,
        **options,
    )
    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
