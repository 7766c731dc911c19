"""Several checks in one atomic step: what chains, reservations and priorities are built on.

A `Check` is one request against one rule for one key: a conditional hit (``HIT``, admitted only
if every limit admits it, optionally within a priority class's ``share`` of the budget), an
unconditional charge (``CHARGE``: the cost already happened, the budget may go into debt) or a
refund (``REFUND``: units charged at time ``at`` given back, as far as each algorithm can).
`evaluate_checks` applies a list of checks all-or-nothing: if any conditional check is denied,
no state changes. States are keyed by ``(key, part)``; two checks on the same state apply one
after the other (a hybrid of two limiters on one key and one limit shares that budget).

A priority share keeps ``(1 - share) * size`` units of each limit back (``size``: the burst of a
bucket or GCRA, the amount of a window): a hit of the class passes only if the limit would still
admit that many more units after it, so the last part of the budget is left to classes with a
larger share. ``remaining`` is then what the class may still take. Stores with a server-side
language port this function (the Redis scripts, the SQL functions) with the same float
operations in the same order; the others (memory, CAS stores) call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

from ratekeeper.algorithms import Algorithm, Rule, State
from ratekeeper.decision import Decision, combine
from ratekeeper.limits import Limit

__all__ = ["CHARGE", "HIT", "REFUND", "Check", "Slot", "evaluate_checks", "keep_of", "step"]

HIT, CHARGE, REFUND = 0, 1, 2
Slot: TypeAlias = tuple[str, str]  # (user key, rule part)


class Check:
    """One request of ``cost`` against ``rule`` for ``key`` (see the module docstring)."""

    __slots__ = ("at", "cost", "key", "mode", "rule", "share")

    def __init__(
        self,
        key: str,
        rule: Rule,
        cost: float,
        mode: int = HIT,
        share: float = 1.0,
        at: float = 0.0,
    ) -> None:
        self.key = key
        self.rule = rule
        self.cost = float(cost)
        self.mode = mode
        self.share = share
        self.at = at

    def slots(self) -> list[Slot]:
        return [(self.key, part) for part in self.rule.parts]

    def keeps(self) -> list[float]:
        """Units kept back per limit for this check's priority share (0 without one)."""
        return [keep_of(self.rule.algorithm, limit, self.share) for limit in self.rule.limits]

    def __repr__(self) -> str:
        mode = ("hit", "charge", "refund")[self.mode]
        return f"Check({self.key!r}, {self.rule!r}, {mode} {self.cost:g}, share={self.share:g})"


def keep_of(algorithm: Algorithm, limit: Limit, share: float) -> float:
    """Units of ``limit`` a class with ``share`` of the budget must leave untouched."""
    if share >= 1.0:
        return 0.0
    return (1.0 - share) * algorithm.size(limit)


def step(
    algorithm: Algorithm,
    state: State,
    now: float,
    cost: float,
    limit: Limit,
    mode: int = HIT,
    keep: float = 0.0,
    at: float = 0.0,
) -> tuple[State, Decision]:
    """One check on one limit: the new state and the limit's decision (a denial returns the state
    it was given)."""
    apply = algorithm.apply
    if mode == CHARGE:
        new = algorithm.charge(state, now, cost, limit)
        return new, apply(new, now, 0.0, limit)[1]
    if mode == REFUND:
        new = algorithm.refund(state, now, cost, limit, at)
        return new, apply(new, now, 0.0, limit)[1]
    if not keep:
        return apply(state, now, cost, limit)
    if cost:
        probe = apply(state, now, cost + keep, limit)[1]
        if not probe.allowed:
            room = apply(state, now, keep, limit)[1]
            return state, Decision(
                False,
                probe.limit,
                room.remaining if room.allowed else 0,
                probe.reset_after,
                probe.retry_after,
                0.0,
                limit,
            )
    new, decision = apply(state, now, cost, limit)
    room = apply(new, now, keep, limit)[1]
    return new, Decision(
        decision.allowed,
        decision.limit,
        room.remaining if room.allowed else 0,
        decision.reset_after,
        decision.retry_after,
        decision.delay,
        limit,
    )


def evaluate_checks(
    checks: Sequence[Check], states: Mapping[Slot, State], now: float
) -> tuple[dict[Slot, State] | None, list[Decision], dict[Slot, float]]:
    """Apply ``checks`` in order, all-or-nothing.

    ``states`` holds the current state of every slot the checks use. Returns the states to write
    (``None`` when a conditional check is denied: nothing may be written), one decision per
    check (several limits combined as by `evaluate`), and per slot the seconds its new state
    takes to be fully replenished (a state in debt takes longer than the algorithm's
    ``horizon``: a store keeps it at least that long). On denial, the limits that would have
    passed report their state as it is, without this request's cost.
    """
    work = dict(states)
    holds: dict[Slot, float] = {}
    results: list[list[Decision]] = []
    admitted = True
    for check in checks:
        algorithm = check.rule.algorithm
        decisions = []
        for part, limit, keep in zip(
            check.rule.parts, check.rule.limits, check.keeps(), strict=True
        ):
            slot = (check.key, part)
            new, decision = step(
                algorithm, work[slot], now, check.cost, limit, check.mode, keep, check.at
            )
            if decision.allowed:
                work[slot] = new
                holds[slot] = decision.reset_after
            else:
                admitted = False
            decisions.append(decision)
        results.append(decisions)
    if admitted:
        changed = {slot: state for slot, state in work.items() if state is not states[slot]}
        return changed, [combine(decisions) for decisions in results], holds
    out = []
    for check, decisions in zip(checks, results, strict=True):
        algorithm = check.rule.algorithm
        fixed = [
            decision
            if not decision.allowed
            else step(algorithm, states[(check.key, part)], now, 0.0, limit, HIT, keep)[1]
            for decision, part, limit, keep in zip(
                decisions, check.rule.parts, check.rule.limits, check.keeps(), strict=True
            )
        ]
        out.append(combine(fixed))
    return None, out, {}
