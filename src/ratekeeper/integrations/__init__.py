"""Web-framework integrations: ASGI (Starlette, FastAPI, Litestar…), Flask, Django, aiohttp.

The framework-neutral parts live once in :mod:`ratekeeper.integrations._core` and are re-exported
here: rules, key functions, costs. Each framework module (``ratekeeper.integrations.starlette``,
``.fastapi``, ``.flask``, ``.django``, ``.aiohttp``) is a thin adapter and is the only module that
imports its framework, so ``import ratekeeper.integrations`` needs no web framework installed.
"""

from ratekeeper.integrations._core import (
    Engine,
    Key,
    LimitRule,
    Outcome,
    RequestView,
    api_key,
    client_ip,
    cost_from_header,
    denial_body,
    header,
    path,
    route,
    storage_key,
    user,
)

__all__ = [
    "Engine",
    "Key",
    "LimitRule",
    "Outcome",
    "RequestView",
    "api_key",
    "client_ip",
    "cost_from_header",
    "denial_body",
    "header",
    "path",
    "route",
    "storage_key",
    "user",
]
