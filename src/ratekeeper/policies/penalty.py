"""Penalties (flask-limiter#411): after ``after`` denials within ``within`` seconds a key is banned,
for a time that grows with repeat offences, on every process that shares the store.

``Penalty(limiter, after=5, within=60, ban=30, factor=2, max_ban=3600, forget=86400)`` wraps a
limiter (`AsyncPenalty` an `AsyncRateLimiter`): ``hit``/``peek``/``enforce`` answer as the limiter
does, except that a banned key is denied without consuming anything, with ``retry_after`` the ban
time left. The ``k``-th offence still remembered bans for ``min(max_ban, ban * factor**k)``
seconds; one offence is forgotten every ``forget`` seconds. ``reset(key)`` clears the key's
budget, strikes, ban and offences. Denials during a ban are not strikes.

Everything is kept in the limiter's store as limiter state, with the store operations every
limiter uses (``apply_checks``, ``reset``), under the limiter's key and three namespaced rules:

- strikes: a sliding log of ``after`` units per ``within`` seconds; each denial by the limiter
  takes one unit. The hit that takes the last one is the only one that bans (the log is
  atomic); it then resets the strikes, so the next ``after`` denials ban again.
- the ban: a token bucket of one unit per second. A ban of ``D`` seconds is an unconditional
  charge of ``D`` units (the bucket goes ``D`` units into debt); a hit of one unit passes again
  exactly ``D`` seconds later. Every decision applies, in one atomic ``apply_checks`` with the
  limiter's own check, a hit of one unit on it and a refund of that unit: nothing changes unless
  the key is banned, and then the limiter's check consumes nothing either.
- offences: a token bucket of ``levels`` units (the offences after which the ban stops growing),
  one coming back every ``forget`` seconds; each ban takes one, so ``levels - remaining`` is the
  number of offences remembered.

A ban costs the denial that triggers it three more round trips (count the strike, charge the ban
and the offence, reset the strikes); any other denial one more, an admission none. Stores keep a
state in debt until it is repaid, so a ban outlives the bucket's horizon; on NATS no entry outlives
the bucket's ``ttl`` (default one day), which bounds ``max_ban`` and ``forget`` there.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ratekeeper._drive import drive, drive_async
from ratekeeper.algorithms import Rule
from ratekeeper.algorithms.checks import CHARGE, HIT, REFUND, Check
from ratekeeper.decision import Decision
from ratekeeper.errors import ConfigError, RateLimitExceeded, StoreUnavailable
from ratekeeper.limiter import AsyncRateLimiter, RateLimiter
from ratekeeper.limits import MAX_AMOUNT, MAX_PERIOD, MIN_PERIOD, Limit
from ratekeeper.policies._steps import AsyncSteps, Flow, SyncSteps, apply, number, reset

__all__ = ["AsyncPenalty", "Penalty", "PenaltyCore"]

log = logging.getLogger("ratekeeper")

# The ban bucket meters seconds: one unit per second, so a ban of D seconds is a debt of D units.
_SECOND = Limit(1, per=1)


class PenaltyCore:
    """What `Penalty` and `AsyncPenalty` share: settings, checks and the flows of each call."""

    store: Any

    def __init__(
        self,
        limiter: Any,
        kind: type[Any],
        *,
        after: int,
        within: float,
        ban: float,
        factor: float = 2.0,
        max_ban: float | None = None,
        forget: float = 86400.0,
    ) -> None:
        if not isinstance(limiter, kind):
            raise ConfigError(
                f"{type(self).__name__} wraps a {kind.__name__}, got {type(limiter).__name__}: "
                f"{limiter!r}"
            )
        self.limiter = limiter
        self.store = limiter._checks_store()
        self.clock = limiter.clock
        self.after = int(number(after, "after", 1, MAX_AMOUNT, integer=True))
        self.within = number(within, "within", MIN_PERIOD, MAX_PERIOD)
        self.ban = number(ban, "ban", MIN_PERIOD, MAX_PERIOD)
        self.factor = number(factor, "factor", 1.0, MAX_AMOUNT)
        self.max_ban = self.ban if max_ban is None and self.factor == 1.0 else max_ban
        if self.max_ban is None:
            raise ConfigError("max_ban is needed when the ban grows (factor > 1)")
        self.max_ban = number(self.max_ban, "max_ban", self.ban, MAX_PERIOD)
        # Offences after which the ban stops growing: ban * factor**levels >= max_ban.
        growth = self.max_ban / self.ban
        grows = growth > 1.0 and self.factor > 1.0
        self.levels = max(1, math.ceil(math.log(growth, self.factor))) if grows else 1
        self.forget = number(forget, "forget", MIN_PERIOD, MAX_PERIOD / self.levels)
        self.strikes = Rule(
            "sliding_log", (Limit(self.after, per=self.within),), namespace="penalty:strikes:"
        )
        self.bans = Rule("token_bucket", (_SECOND,), namespace="penalty:ban:")
        self.offences = Rule(
            "token_bucket",
            (Limit(self.levels, per=self.levels * self.forget),),
            namespace="penalty:offences:",
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.limiter!r}, after={self.after}, within={self.within:g}, "
            f"ban={self.ban:g}, factor={self.factor:g}, max_ban={self.max_ban:g})"
        )

    def ban_for(self, offences: int) -> float:
        """Seconds of the ban after ``offences`` earlier offences still remembered."""
        assert self.max_ban is not None
        if self.factor == 1.0:
            return self.ban
        return min(self.max_ban, self.ban * self.factor ** min(offences, self.levels))

    def _decide(
        self, key: object, cost: object, priority: str | None, write: bool
    ) -> Flow[Decision]:
        name, units = self.limiter._checked(key, cost)
        own = self.limiter._check(name, units, priority)
        now = self.clock()
        checks = [Check(name, self.bans, 1.0, HIT), Check(name, self.bans, 1.0, REFUND, at=now)]
        try:
            applied = yield apply([*checks, own], now, write)
        except StoreUnavailable as exc:
            return self.limiter._fallback(exc, counted=write)  # type: ignore[no-any-return]
        banned, _, decision = applied.decisions
        if not banned.allowed:
            return _banned(decision, banned.retry_after)
        if decision.allowed or not write:
            return decision  # type: ignore[no-any-return]
        try:
            seconds = yield from self._strike(name, applied.now)
        except StoreUnavailable as exc:
            if self.limiter.on_store_error == "raise":
                raise
            log.warning("rate limit store unavailable (%s); a penalty strike was not counted", exc)
            return decision  # type: ignore[no-any-return]
        return decision if seconds is None else _banned(decision, seconds)

    def _strike(self, key: str, now: float) -> Flow[float | None]:
        """Count one denial; if it is the ``after``-th, ban: the seconds of the ban, else None."""
        counted = yield apply(
            [Check(key, self.strikes, 1.0, HIT), Check(key, self.offences, 0.0, HIT)], now
        )
        strike, offences = counted.decisions
        if not strike.allowed or strike.remaining > 0:
            return None
        earlier = self.levels - offences.remaining
        seconds = self.ban_for(earlier)
        charges = [Check(key, self.bans, seconds, CHARGE)]
        if earlier < self.levels:
            charges.append(Check(key, self.offences, 1.0, CHARGE))
        yield apply(charges, counted.now)
        yield reset(key, self.strikes)
        return seconds

    def _banned(self, key: object) -> Flow[float]:
        name = self.limiter._checked(key, 0)[0]
        applied = yield apply([Check(name, self.bans, 1.0, HIT)], self.clock(), False)
        state = applied.decisions[0]
        return 0.0 if state.allowed else float(state.retry_after)

    def _reset(self, key: object) -> Flow[None]:
        name = self.limiter._checked(key, 0)[0]
        for rule in (self.limiter.rule, self.strikes, self.bans, self.offences):
            yield reset(name, rule)


def _banned(decision: Decision, seconds: float) -> Decision:
    """The limiter's ``decision`` as a denial by a ban of ``seconds`` more."""
    return Decision(
        False,
        decision.limit,
        0,
        max(decision.reset_after, seconds),
        max(decision.retry_after, seconds),
        0.0,
        decision.policy,
        False,
        decision.details,
    )


class Penalty(SyncSteps, PenaltyCore):
    """A limiter whose keys are banned after repeated denials, for a time that grows with repeat
    offences (see the module docstring): ``Penalty(limiter, after=5, within=60, ban=30,
    factor=2, max_ban=3600)``, then ``penalty.hit(key)``."""

    def __init__(self, limiter: RateLimiter, **options: Any) -> None:
        super().__init__(limiter, RateLimiter, **options)

    def hit(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """The limiter's ``hit``, denied without consuming anything while ``key`` is banned; a
        denial is a strike, and the ``after``-th strike within ``within`` seconds bans."""
        return drive(self._decide(key, cost, priority, True), self._run)

    def peek(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """What :meth:`hit` would answer now, consuming and counting nothing."""
        return drive(self._decide(key, cost, priority, False), self._run)

    def enforce(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """Like :meth:`hit`, but raise :class:`RateLimitExceeded` on denial."""
        decision = self.hit(key, cost, priority)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    def banned(self, key: str) -> float:
        """Seconds the ban of ``key`` still lasts (0.0 when it is not banned)."""
        return drive(self._banned(key), self._run)

    def reset(self, key: str) -> None:
        """Forget ``key``'s budget, strikes, ban and offences."""
        drive(self._reset(key), self._run)


class AsyncPenalty(AsyncSteps, PenaltyCore):
    """The asyncio twin of `Penalty`, wrapping an `AsyncRateLimiter` (methods are coroutines)."""

    def __init__(self, limiter: AsyncRateLimiter, **options: Any) -> None:
        super().__init__(limiter, AsyncRateLimiter, **options)

    async def hit(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """See `Penalty.hit`."""
        return await drive_async(self._decide(key, cost, priority, True), self._run)

    async def peek(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """See `Penalty.peek`."""
        return await drive_async(self._decide(key, cost, priority, False), self._run)

    async def enforce(self, key: str, cost: float = 1, priority: str | None = None) -> Decision:
        """See `Penalty.enforce`."""
        decision = await self.hit(key, cost, priority)
        if not decision.allowed:
            raise RateLimitExceeded(decision)
        return decision

    async def banned(self, key: str) -> float:
        """See `Penalty.banned`."""
        return await drive_async(self._banned(key), self._run)

    async def reset(self, key: str) -> None:
        """See `Penalty.reset`."""
        await drive_async(self._reset(key), self._run)
