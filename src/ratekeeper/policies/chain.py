"""What `Chain` and `AsyncChain` share, without I/O: checking the limiters and the keys, building
the checks of one request, and the failure policy.

A chain is one request against several limiters, each with its own key, limits and algorithm,
all-or-nothing, in one atomic store operation (``apply_checks``): the hierarchical limit (global
> tenant > user), a quota pool (a pool limiter over member limiters), or a hybrid algorithm
(a token bucket and a sliding window over the same key). The limiters share one store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ratekeeper._limiter_base import LimiterCore
from ratekeeper.algorithms.checks import HIT, Check
from ratekeeper.decision import Decision, combine
from ratekeeper.errors import ConfigError, StoreUnavailable
from ratekeeper.policies.priorities import share_of
from ratekeeper.policies.reservation import Amounts, Ledger, amounts

__all__ = ["ChainCore"]


class ChainCore:
    """The configuration and checks of a chain (see the module docstring)."""

    store: Any

    def __init__(self, limiters: Sequence[LimiterCore], kind: type[LimiterCore]) -> None:
        if not limiters:
            raise ConfigError("a chain needs at least one limiter")
        for limiter in limiters:
            if not isinstance(limiter, kind):
                raise ConfigError(
                    f"every level of a {type(self).__name__} must be a {kind.__name__}, "
                    f"got {limiter!r}"
                )
        first = limiters[0]
        for limiter in limiters[1:]:
            if limiter.store is not first.store:
                raise ConfigError(
                    "the limiters of a chain must share one store (pass the same store object, "
                    f"or the same named store of a registry): {limiter!r} uses "
                    f"{type(limiter.store).__name__} object {id(limiter.store):#x}, {first!r} "
                    f"uses {type(first.store).__name__} object {id(first.store):#x}"
                )
        self.store = first._checks_store()
        self.limiters: tuple[Any, ...] = tuple(limiters)
        self.clock = first.clock

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.limiters))})"

    def __len__(self) -> int:
        return len(self.limiters)

    def keys_of(self, keys: Sequence[object]) -> list[str]:
        """One key per level; a single key stands for every level (a hybrid on one key)."""
        n = len(self.limiters)
        if len(keys) == 1 and n > 1:
            keys = list(keys) * n
        if len(keys) != n:
            raise ValueError(f"this chain needs one key per limiter ({n}), got {len(keys)}")
        for key in keys:
            if not isinstance(key, str):
                raise ValueError(f"key must be a str, got {type(key).__name__}: {key!r}")
        return list(keys)  # type: ignore[arg-type]

    def checks(
        self, keys: Sequence[object], cost: Amounts, priority: str | None, mode: int = HIT
    ) -> list[Check]:
        """The checks of one request: per level its key, rule, cost and class share. A class
        applies to the levels that have ``priorities``; a class none of them knows raises."""
        names = self.keys_of(keys)
        costs = amounts(cost, len(self.limiters), "cost")
        if priority is not None and not any(
            limiter.priorities and priority in limiter.priorities for limiter in self.limiters
        ):
            raise ValueError(f"unknown priority class {priority!r}: no level of this chain has it")
        return [
            Check(
                key,
                limiter.rule,
                units,
                mode,
                share_of(limiter.priorities, priority) if limiter.priorities else 1.0,
            )
            for key, limiter, units in zip(names, self.limiters, costs, strict=True)
        ]

    def combined(self, decisions: Sequence[Decision]) -> Decision:
        """The chain's decision: the binding level is the denying one (else the one with least
        remaining); ``details`` has one decision per limiter."""
        if len(decisions) == 1:
            return decisions[0]
        return combine(decisions)

    def fallback(self, exc: StoreUnavailable, *, counted: bool = True) -> Decision:
        """The answer when the store is unreachable: the first limiter's ``on_store_error``."""
        return self.limiters[0]._fallback(exc, counted=counted)  # type: ignore[no-any-return]

    def ledger(self, checks: Sequence[Check], decision: Decision, now: float) -> Ledger:
        return Ledger([(c.key, c.rule) for c in checks], [c.cost for c in checks], decision, now)

    def settle_failed(self, exc: StoreUnavailable) -> None:
        self.limiters[0]._settle_failed(exc)
