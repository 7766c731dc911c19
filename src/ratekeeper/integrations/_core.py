"""The framework-neutral parts the adapters import, gathered from their modules:
:mod:`.keys` (request view, key functions), :mod:`.rules` (rules, outcome, 429 body) and
:mod:`.engine` (the checking engine)."""

from ratekeeper.integrations.engine import Engine, scope_of
from ratekeeper.integrations.keys import (
    CostSpec,
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
    route,
    user,
    user_id,
)
from ratekeeper.integrations.rules import LimitRule, Outcome, denial_body

__all__ = [
    "CostSpec",
    "Engine",
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
    "route",
    "scope_of",
    "user",
    "user_id",
]
