"""A requests adapter that waits for a limiter before each request and honours the upstream's
own rate-limit signals (``Retry-After``, ``RateLimit``/``RateLimit-Policy``, ``X-RateLimit-*``)::

    session = requests.Session()
    session.mount("https://", RateLimitedAdapter(RateLimiter("10/second"), key="github"))

``key``: a string, or a function of the `requests.PreparedRequest` (called once per request); by
default the request's host. ``retry_429`` and ``timeout`` as for the httpx transports; other
keyword arguments go to `requests.adapters.HTTPAdapter` (``pool_maxsize``, ``max_retries``...).
Mount one adapter per limiter; sessions that mount adapters built on the same limiter share the
upstream's pauses and budgets (`ratekeeper.clients.gate`).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from ratekeeper._drive import drive
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
from ratekeeper.limiter import RateLimiter

__all__ = ["RateLimitedAdapter"]


def _status(response: Response) -> int:
    return response.status_code


def _headers(response: Response) -> Headers:
    return response.headers


class RateLimitedAdapter(HTTPAdapter):
    """A `requests` transport adapter limited by a `RateLimiter` and by the upstream."""

    def __init__(
        self,
        limiter: RateLimiter,
        key: KeySpec = None,
        *,
        retry_429: bool = False,
        timeout: float | None = None,
        **adapter_options: Any,
    ) -> None:
        super().__init__(**adapter_options)
        self.limiter = limiter
        self.key = key
        self.retry_429 = retry_429
        self.timeout = timeout
        self._gate = gate_of(limiter)

    def send(  # type: ignore[override]
        self, request: PreparedRequest, **kwargs: Any
    ) -> Response:
        host = urlsplit(request.url or "").hostname or ""
        key = key_of(self.key, request, host)
        flow = request_flow(self._gate, key, _status, _headers, retry_429=self.retry_429)

        def run(step: Step) -> Any:
            kind, arg = step
            if kind == ACQUIRE:
                return self.limiter.acquire(key, timeout=self.timeout)
            if kind == RELEASE:
                return arg.release()
            if kind == SLEEP:
                return time.sleep(arg)
            if kind == SEND:
                return super(RateLimitedAdapter, self).send(request, **kwargs)
            assert kind == DISCARD
            _ = arg.content  # read the body so the connection goes back to the pool
            return arg.close()

        response: Response = drive(flow, run)
        return response
