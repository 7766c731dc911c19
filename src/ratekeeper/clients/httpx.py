"""httpx transports that wait for a limiter before each request and honour the upstream's own
rate-limit signals (``Retry-After``, ``RateLimit``/``RateLimit-Policy``, ``X-RateLimit-*``)::

    client = httpx.Client(transport=RateLimitedTransport(RateLimiter("10/second"), key="github"))
    aclient = httpx.AsyncClient(transport=AsyncRateLimitedTransport(AsyncRateLimiter("10/second")))

``key``: a string, or a function of the `httpx.Request` (called once per request); by default the
request's host. ``transport``: the transport to wrap (default a new `httpx.HTTPTransport`).
``retry_429``: retry a 429 once the upstream's pause is over (up to ``MAX_429_RETRIES`` times)
instead of returning it. ``timeout``: how long to wait for the local limiter (``None``: as long
as needed; then `RateLimitTimeout`). See `ratekeeper.clients.gate` for what is shared and how.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from ratekeeper._drive import drive, drive_async
from ratekeeper.clients.gate import (
    ACQUIRE,
    DISCARD,
    RELEASE,
    SEND,
    SLEEP,
    KeySpec,
    Step,
    gate_of,
    key_of,
    request_flow,
)
from ratekeeper.clients.signals import Headers
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter

__all__ = ["AsyncRateLimitedTransport", "RateLimitedTransport"]


def _status(response: httpx.Response) -> int:
    return response.status_code


def _headers(response: httpx.Response) -> Headers:
    return response.headers


class _Options:
    def __init__(
        self,
        limiter: Any,
        key: KeySpec,
        retry_429: bool,
        timeout: float | None,
    ) -> None:
        self.limiter = limiter
        self.key = key
        self.retry_429 = retry_429
        self.timeout = timeout
        self._gate = gate_of(limiter)

    def _flow(self, request: httpx.Request) -> tuple[str, Any]:
        key = key_of(self.key, request, request.url.host)
        flow = request_flow(self._gate, key, _status, _headers, retry_429=self.retry_429)
        return key, flow


class RateLimitedTransport(_Options, httpx.BaseTransport):
    """A sync httpx transport limited by a `RateLimiter` and by the upstream's signals."""

    def __init__(
        self,
        limiter: RateLimiter,
        key: KeySpec = None,
        *,
        transport: httpx.BaseTransport | None = None,
        retry_429: bool = False,
        timeout: float | None = None,
    ) -> None:
        super().__init__(limiter, key, retry_429, timeout)
        self.transport = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key, flow = self._flow(request)

        def run(step: Step) -> Any:
            kind, arg = step
            if kind == ACQUIRE:
                return self.limiter.acquire(key, timeout=self.timeout)
            if kind == RELEASE:
                return arg.release()
            if kind == SLEEP:
                return time.sleep(arg)
            if kind == SEND:
                return self.transport.handle_request(request)
            assert kind == DISCARD
            arg.read()
            return arg.close()

        response: httpx.Response = drive(flow, run)
        return response

    def close(self) -> None:
        self.transport.close()


class AsyncRateLimitedTransport(_Options, httpx.AsyncBaseTransport):
    """An asyncio httpx transport limited by an `AsyncRateLimiter` and by the upstream."""

    def __init__(
        self,
        limiter: AsyncRateLimiter,
        key: KeySpec = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_429: bool = False,
        timeout: float | None = None,
    ) -> None:
        super().__init__(limiter, key, retry_429, timeout)
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key, flow = self._flow(request)

        async def run(step: Step) -> Any:
            kind, arg = step
            if kind == ACQUIRE:
                return await self.limiter.acquire(key, timeout=self.timeout)
            if kind == RELEASE:
                return await arg.release()
            if kind == SLEEP:
                return await asyncio.sleep(arg)
            if kind == SEND:
                return await self.transport.handle_async_request(request)
            assert kind == DISCARD
            await arg.aread()
            return await arg.aclose()

        response: httpx.Response = await drive_async(flow, run)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()
