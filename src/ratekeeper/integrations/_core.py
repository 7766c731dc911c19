"""The framework-neutral parts the adapters import, gathered from their modules:
:mod:`.keys` (request view, key functions), :mod:`.rules` (rules, outcome, 429 body) and
:mod:`.engine` (the checking engine)."""

from ratekeeper.integrations.engine import Engine, scope_of
from ratekeeper.integrations.keys import (
    CostSpec,
    Key,
    KeySpec,
    LimitSpec,
    RequestView,
    ViewFunction,
    _last_logged,
    api_key,
    client_address,
    client_ip,
    cost_from_header,
    header,
    path,
    peer_key,
    route,
    storage_key,
    user,
    user_id,
)
from ratekeeper.integrations.rules import LimitRule, Outcome, denial_body

__all__ = [
    "CostSpec",
    "Engine",
    "Key",
    "KeySpec",
    "LimitRule",
    "LimitSpec",
    "Outcome",
    "RequestView",
    "ViewFunction",
    "_last_logged",
    "api_key",
    "client_address",
    "client_ip",
    "cost_from_header",
    "denial_body",
    "header",
    "path",
    "peer_key",
    "route",
    "scope_of",
    "storage_key",
    "user",
    "user_id",
]
