"""Rate limits for ASGI WebSockets (Starlette, FastAPI, any ASGI app): new connections per
client, and messages per connection.

.. code-block:: python

    app.add_middleware(WebSocketRateLimitMiddleware, connections="10/minute", messages="5/second")

- ``connections``: how many connections a client may open (a rate, or a function of the
  connection returning one, e.g. by tenant tier), keyed like HTTP requests (``key``, default
  the client address behind ``trusted_proxies``) and counted in the engine's store, so every
  process shares the budget. A refused connection is accepted and closed at once with code
  1008 (policy violation) and a reason saying when to retry: a browser sees the code and the
  reason (a close before the accept would reach it as a bare HTTP 403).
- ``messages``: how many messages one connection may send (a rate). A connection lives in one
  process, so its budget is kept in this process's memory (no store round trip per message) and
  freed when it closes. The first message over the limit closes the connection with 1008 and a
  reason; the application's ``receive()`` gets a ``websocket.disconnect`` with that code, and
  whatever it sends afterwards is dropped.

HTTP requests pass through untouched (put :class:`~ratekeeper.integrations.starlette.
RateLimitMiddleware` beside it for those); so do websockets on ``exempt_paths``. A store that
cannot answer about a connection follows ``on_store_error`` (default ``"allow"``). Every other
keyword is an :class:`Engine` option, or pass a ready ``engine``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, cast

from ratekeeper.decision import Decision
from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import LimitSpec, LimitValue
from ratekeeper.integrations.starlette import ASGIApp, Message, Receive, Scope, Send, view_of
from ratekeeper.limiter import RateLimiter
from ratekeeper.limits import Limit, to_limits

__all__ = [
    "CONNECTIONS_SCOPE",
    "MESSAGES_SCOPE",
    "POLICY_VIOLATION",
    "WebSocketRateLimitMiddleware",
    "close_reason",
]

POLICY_VIOLATION = 1008  # RFC 6455 close code: the peer broke a policy (here: a rate limit)
CLOSE_REASON_MAX = 123  # bytes: a close frame's payload is at most 125, 2 of them the code
CONNECTIONS_SCOPE = "websocket:connections"  # the budget names (limiter names in metrics)
MESSAGES_SCOPE = "websocket:messages"

try:  # only to give custom functions a friendly connection object
    from starlette.requests import HTTPConnection as _Connection
except ImportError:  # pragma: no cover - bare ASGI without Starlette
    _Connection = None  # type: ignore[assignment,misc]


def close_reason(decision: Decision, what: str) -> str:
    """The close frame's reason for a denial of ``what``: the limit and when to retry, cut to
    the 123 bytes a close frame holds."""
    if decision.retry_after == math.inf:
        wait = "this can never pass"
    else:
        wait = f"retry after {max(1, math.ceil(decision.retry_after))}s"
    text = f"rate limit exceeded: {what} ({decision.policy.name}); {wait}"
    return text.encode()[:CLOSE_REASON_MAX].decode(errors="ignore")


class WebSocketRateLimitMiddleware:
    """Limit WebSocket connections per client and messages per connection (see the module
    docstring). ``close_code``: the close code of a denial (default 1008)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        connections: LimitSpec | None = None,
        messages: LimitValue | None = None,
        close_code: int = POLICY_VIOLATION,
        engine: Engine | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        if engine is not None and options:
            raise TypeError("pass either engine= or engine options, not both")
        self.engine = engine if engine is not None else Engine(**options)
        self.close_code = close_code
        self.connection_rule = (
            None if connections is None else self.engine.rule(connections, scope=CONNECTIONS_SCOPE)
        )
        self.messages: RateLimiter | None = None
        if messages is not None:
            limits = to_limits(messages if isinstance(messages, str | Limit) else tuple(messages))
            registry = self.engine.registry
            built = registry.limiter(
                registry.store(None),  # this process's memory: a connection never moves
                limits,
                asynchronous=False,
                algorithm=self.engine.algorithm,
                clock=self.engine.clock,
                name=MESSAGES_SCOPE,
            )
            self.messages = cast(RateLimiter, built)
        self._ids = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        engine = self.engine
        view = view_of(scope, _Connection(scope) if _Connection is not None else scope)
        if engine.is_exempt(view):
            await self.app(scope, receive, send)
            return
        if self.connection_rule is not None:
            outcome = await engine.check_async(view, [self.connection_rule])
            if not outcome.allowed:
                assert outcome.decision is not None
                await self._refuse(receive, send, close_reason(outcome.decision, "connections"))
                return
        if self.messages is None:
            await self.app(scope, receive, send)
            return
        key = f"{MESSAGES_SCOPE}:{next(self._ids)}"
        connection = _Metered(self.messages, key, receive, send, self.close_code)
        try:
            await self.app(scope, connection.receive, connection.send)
        finally:
            self.messages.reset(connection.key)  # its budget goes with it

    async def _refuse(self, receive: Receive, send: Send, reason: str) -> None:
        """Accept the connection and close it at once with the close code and ``reason``."""
        message = await receive()
        if message["type"] != "websocket.connect":  # the client is gone already
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": self.close_code, "reason": reason})


class _Metered:
    """One connection's ``receive``/``send``: each message received is checked against the
    connection's budget; the first one over it closes the connection."""

    def __init__(
        self, limiter: RateLimiter, key: str, receive: Receive, send: Send, close_code: int
    ) -> None:
        self.limiter = limiter
        self.key = key
        self.close_code = close_code
        self._receive = receive
        self._send = send
        self.closed = False

    async def receive(self) -> Message:
        message: Message = await self._receive()
        if message["type"] != "websocket.receive" or self.closed:
            return message
        decision = self.limiter.hit(self.key)  # the memory store: no I/O to wait for
        if decision.allowed:
            return message
        self.closed = True
        reason = close_reason(decision, "messages")
        await self._send({"type": "websocket.close", "code": self.close_code, "reason": reason})
        return {"type": "websocket.disconnect", "code": self.close_code, "reason": reason}

    async def send(self, message: Message) -> None:
        if not self.closed:  # after the close, the application's messages go nowhere
            await self._send(message)
