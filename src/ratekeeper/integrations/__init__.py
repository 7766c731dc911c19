"""Web-framework integrations: ASGI (Starlette, FastAPI, Litestar…), Flask, Django, aiohttp.

The framework-neutral parts live once, and their public names are re-exported here:
:mod:`.keys` (the request view, key functions, costs), :mod:`.rules` (rules, the decorators'
options, the outcome, the default 429) and :mod:`.engine` (the checking engine, which gets its
store and limiters from the registry layer). Each framework module
(``ratekeeper.integrations.starlette``, ``.fastapi``, ``.flask``, ``.django``, ``.aiohttp``) is a
thin adapter, request to view and outcome to response, and is the only module that imports its
framework, so ``import ratekeeper.integrations`` needs no web framework installed.
"""

from ratekeeper.integrations.engine import Engine
from ratekeeper.integrations.keys import (
    Key,
    RequestView,
    api_key,
    client_ip,
    cost_from_header,
    header,
    path,
    route,
    storage_key,
    user,
)
from ratekeeper.integrations.rules import LimitRule, Outcome, denial_body

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
