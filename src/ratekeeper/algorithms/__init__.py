"""The pure rate-limiting algorithms, the `Rule` a limiter enforces (an algorithm over limits),
and `evaluate`, which applies one request to a rule's limits all-or-nothing."""

from __future__ import annotations

from collections.abc import Sequence

from ratekeeper.algorithms.base import (
    EPS_CLOCK,
    EPS_TIME,
    EPS_UNITS,
    INF,
    MAX_CLOCK_SLACK,
    Algorithm,
    State,
)
from ratekeeper.algorithms.fixed_window import FixedWindow
from ratekeeper.algorithms.gcra import GCRA, LeakyBucket
from ratekeeper.algorithms.sliding_log import SlidingLog
from ratekeeper.algorithms.sliding_window import SlidingWindow
from ratekeeper.algorithms.token_bucket import TokenBucket
from ratekeeper.decision import Decision, combine
from ratekeeper.errors import ConfigError
from ratekeeper.limits import Limit

__all__ = [
    "ALGORITHMS",
    "EPS_CLOCK",
    "EPS_TIME",
    "EPS_UNITS",
    "INF",
    "MAX_CLOCK_SLACK",
    "Algorithm",
    "Rule",
    "State",
    "evaluate",
    "get_algorithm",
]

ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        TokenBucket(),
        LeakyBucket(),
        FixedWindow(),
        SlidingWindow(),
        SlidingLog(),
        GCRA(),
    )
}


def get_algorithm(name: str | Algorithm) -> Algorithm:
    """Look an algorithm up by name; unknown names raise :class:`ConfigError`."""
    if isinstance(name, Algorithm):
        return name
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown algorithm {name!r}; choose one of {', '.join(sorted(ALGORITHMS))}"
        ) from None


class Rule:
    """What one limiter enforces: an algorithm over one or more limits.

    ``parts`` names each limit's state independently of the user key, e.g.
    ``"token_bucket:100-per-60s"``: two limiters with the same algorithm and limit on one store
    share that limit's budget for a key. A ``namespace`` keeps a rule's states apart from those of
    the same limits elsewhere (a limiter's candidate ``shadow_limits`` use ``"shadow:"``).
    """

    __slots__ = ("algorithm", "limits", "parts")

    def __init__(
        self, algorithm: str | Algorithm, limits: tuple[Limit, ...], *, namespace: str = ""
    ) -> None:
        self.algorithm = get_algorithm(algorithm)
        # A limit written twice ("2/second;2/second") is one budget: every store keeps one
        # state per part, so the parts must be distinct.
        self.limits = tuple(dict.fromkeys(limits))
        self.parts = tuple(
            f"{namespace}{self.algorithm.name}:{limit.name}" for limit in self.limits
        )

    def __repr__(self) -> str:
        return f"Rule({self.algorithm.name}, {'; '.join(map(str, self.limits))})"


def evaluate(
    algorithm: Algorithm,
    limits: Sequence[Limit],
    states: Sequence[State],
    now: float,
    cost: float,
) -> tuple[list[State] | None, Decision]:
    """Apply one request to several limits, all-or-nothing.

    Returns the new states (``None`` when the request is denied: nothing may be written) and the
    combined decision. On denial the limits that would have passed report their state as it is,
    without this request's cost.
    """
    apply = algorithm.apply
    results = [apply(state, now, cost, limit) for state, limit in zip(states, limits, strict=True)]
    decisions = [decision for _, decision in results]
    if all(decisions):
        return [state for state, _ in results], combine(decisions)
    decisions = [
        d if not d else apply(state, now, 0.0, limit)[1]
        for d, state, limit in zip(decisions, states, limits, strict=True)
    ]
    return None, combine(decisions)
