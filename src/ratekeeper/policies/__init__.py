"""Policies beyond one key, on top of the limiters: `Chain` / `AsyncChain` (several limiters,
all-or-nothing), reservations (`Reservation` / `AsyncReservation`: costs known afterwards) and
priority classes (``priorities=`` on a limiter), penalties (`Penalty` / `AsyncPenalty`: bans that
grow with repeat offences), adaptive limits (`AdaptiveLimiter` / `AsyncAdaptiveLimiter`: AIMD
from reported outcomes) and quota pools (`QuotaPool` / `AsyncQuotaPool`). All of them rest on one
store operation, ``apply_checks`` (`ratekeeper.algorithms.checks`).

The names are loaded on first use: the limiters import the reservation classes from here, and
the chains import the limiters.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AdaptiveLimiter",
    "AsyncAdaptiveLimiter",
    "AsyncChain",
    "AsyncPenalty",
    "AsyncQuotaPool",
    "AsyncReservation",
    "Chain",
    "Penalty",
    "QuotaPool",
    "Reservation",
]

_WHERE = {
    "AsyncChain": "ratekeeper.policies._async_chain",
    "Chain": "ratekeeper.policies._sync_chain",
    "AsyncReservation": "ratekeeper.policies._async_reservation",
    "Reservation": "ratekeeper.policies._sync_reservation",
    "AdaptiveLimiter": "ratekeeper.policies.adaptive",
    "AsyncAdaptiveLimiter": "ratekeeper.policies.adaptive",
    "Penalty": "ratekeeper.policies.penalty",
    "AsyncPenalty": "ratekeeper.policies.penalty",
    "QuotaPool": "ratekeeper.policies.quota",
    "AsyncQuotaPool": "ratekeeper.policies.quota",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(where), name)
