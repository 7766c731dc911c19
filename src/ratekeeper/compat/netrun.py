"""netrun's FastAPI decorators on ratekeeper: ``rate_limit(rate=, period=)``, ``limit_by_user``,
``limit_by_api_key``.

.. code-block:: python

    from ratekeeper.compat.netrun import limit_by_api_key, rate_limit

    @app.get("/data")
    @rate_limit(rate=10, period=60)             # 10 requests a minute per client address
    async def data(): ...

    @app.get("/reports")
    @limit_by_api_key(rate=1000, period=3600)   # per X-API-Key (stored as a digest)
    async def reports(): ...

Each decorator is :meth:`ratekeeper.integrations.fastapi.Limiter.limit` with the limit
``Limit(rate, per=period, burst=burst)``: a denial raises
:class:`~ratekeeper.integrations.fastapi.RateLimited` (a `RateLimitExceeded`, and an
``HTTPException``, so it is a 429 with its headers even without an exception handler), and its
``headers`` are netrun's ``exc.headers``. As in netrun, each decorator without ``limiter=`` has
a limiter of its own (a memory store) that sends ``X-RateLimit-Reset`` as a Unix timestamp
(``reset_header="epoch"``); pass ``limiter=`` (a FastAPI `Limiter`) for a shared store, key
settings or seconds. Unlike netrun, the default key is the socket peer's address: a forwarding
header counts only from the ``trusted_proxies`` of the limiter (netrun trusted any client's
``X-Forwarded-For``), and an API key is stored as a digest, never as itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ratekeeper.integrations.fastapi import Limiter
from ratekeeper.integrations.keys import Key, KeySpec, RequestView, ViewFunction, api_key, user_id
from ratekeeper.limits import Limit

__all__ = ["RESET_HEADER", "limit_by_api_key", "limit_by_user", "rate_limit"]

F = TypeVar("F", bound=Callable[..., Any])

RESET_HEADER = "epoch"  # netrun's X-RateLimit-Reset: the Unix time the limit is replenished
DEFAULT_RATE = 100  # netrun's defaults: 100 requests per 60 seconds (API keys: 1000)
DEFAULT_API_KEY_RATE = 1000
DEFAULT_PERIOD = 60.0


def rate_limit(
    rate: int = DEFAULT_RATE,
    period: float = DEFAULT_PERIOD,
    burst: int | None = None,
    key: str | KeySpec | None = None,
    limiter: Limiter | None = None,
) -> Callable[[F], F]:
    """Limit a FastAPI route to ``rate`` requests per ``period`` seconds (bursts of ``burst``,
    default ``rate``), per ``key``: a function of the request (sync or async), a fixed string
    (one budget for every caller), or None for the client address. Decorate below
    ``@app.get``."""
    limit = Limit(rate, per=period, burst=burst)
    if isinstance(key, str):
        key = _fixed(key)
    return _own(limiter).limit(limit, key=key)


def limit_by_user(
    rate: int = DEFAULT_RATE,
    period: float = DEFAULT_PERIOD,
    user_attr: str = "id",
    limiter: Limiter | None = None,
) -> Callable[[F], F]:
    """:func:`rate_limit` per authenticated user: ``request.state.user`` (netrun's convention;
    its ``user_attr``, else the user itself) or Starlette's ``request.user``; anonymous requests
    per client address."""
    web = _own(limiter)
    return rate_limit(rate, period, key=_user_key(user_attr, web.engine.client_key), limiter=web)


def limit_by_api_key(
    rate: int = DEFAULT_API_KEY_RATE,
    period: float = DEFAULT_PERIOD,
    header_name: str = "X-API-Key",
    limiter: Limiter | None = None,
) -> Callable[[F], F]:
    """:func:`rate_limit` per API key (the ``header_name`` header, kept as a digest); requests
    without one per client address."""
    web = _own(limiter)
    key = api_key(header_name, fallback=web.engine.client_key)
    return rate_limit(rate, period, key=key, limiter=web)


def _own(limiter: Limiter | None) -> Limiter:
    """``limiter``, or a new one of the decorator's own, as netrun makes (memory store, epoch
    resets)."""
    return limiter if limiter is not None else Limiter(reset_header=RESET_HEADER)


def _fixed(value: str) -> Callable[[Any], str]:
    def key(request: Any) -> str:
        return value

    return key


def _user_key(user_attr: str, fallback: ViewFunction) -> ViewFunction:
    """The user of ``request.state.user`` (by ``user_attr``) or of the ASGI scope, as a
    ``user`` key (the same budget as :func:`ratekeeper.integrations.user`'s); anonymous
    requests by ``fallback``."""

    def key(view: RequestView) -> Key | None:
        state = getattr(view.native, "state", None)
        found = getattr(state, "user", None) if state is not None else None
        if found is not None:
            value = getattr(found, user_attr, None)
            uid = str(value) if value is not None and not callable(value) else user_id(found)
        else:
            uid = user_id(view.get_user()) if view.get_user is not None else None
        return None if uid is None else Key("user", uid)

    return ViewFunction(f"netrun_user({user_attr})", key, fallback)
