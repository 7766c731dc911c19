"""`AsyncReservation` (hand-written) and `Reservation` (generated from it into
``_sync_reservation.py`` by ``scripts/unasync.py``): the I/O of settling a reservation. The
accounting is `ratekeeper.policies.reservation.Ledger`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ratekeeper.algorithms.checks import Check
from ratekeeper.clock import Clock
from ratekeeper.decision import Decision
from ratekeeper.errors import StoreUnavailable
from ratekeeper.policies.reservation import Ledger

__all__ = ["AsyncReservation"]


class AsyncReservation:
    """An estimate charged now, settled later with the actual cost (see
    `ratekeeper.policies.reservation`). ``bool(r)`` is whether it was admitted."""

    __slots__ = ("_clock", "_failed", "_ledger", "_store")

    def __init__(
        self,
        ledger: Ledger,
        store: Any,
        clock: Clock,
        failed: Callable[[StoreUnavailable], None],
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._clock = clock
        self._failed = failed

    @property
    def decision(self) -> Decision:
        """The decision on the estimate (as ``hit`` gives it)."""
        return self._ledger.decision

    @property
    def settled(self) -> bool:
        return self._ledger.settled

    @property
    def estimate(self) -> list[float]:
        """The estimate, per level."""
        return list(self._ledger.estimate)

    @property
    def used(self) -> list[float]:
        """What :meth:`charge` counted so far, per level."""
        return list(self._ledger.used)

    def __bool__(self) -> bool:
        return self._ledger.decision.allowed

    def __repr__(self) -> str:
        state = "settled" if self._ledger.settled else "open"
        return f"<{type(self).__name__} {state} estimate={self._ledger.estimate} {self.decision!r}>"

    async def charge(self, more: float | list[float] | tuple[float, ...]) -> None:
        """Count ``more`` units used (tokens as they stream in); what goes past what is charged
        is charged at once, unconditionally."""
        await self._apply(self._ledger.charge_checks(more), settle=False)

    async def commit(self, actual: float | list[float] | tuple[float, ...] | None = None) -> None:
        """Settle at ``actual`` (default: what :meth:`charge` counted): the difference to what was
        charged is refunded or charged. Raises `RuntimeError` when already settled."""
        await self._apply(self._ledger.commit_checks(actual), settle=True)

    async def cancel(self) -> None:
        """``commit(0)``: give everything back (as far as each algorithm can)."""
        await self.commit(0)

    async def _apply(self, pairs: list[tuple[int, Check]], *, settle: bool) -> None:
        ledger = self._ledger
        if pairs:
            try:
                applied = await self._store.apply_checks(
                    [check for _, check in pairs], self._clock()
                )
            except StoreUnavailable as exc:
                self._failed(exc)  # raises, unless on_store_error drops the settlement
            else:
                ledger.applied(pairs, applied.now)
        if settle:
            ledger.settled = True

    async def __aenter__(self) -> AsyncReservation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Leaving the block unsettled: settle at what :meth:`charge` counted if it counted
        anything, else keep the estimate charged."""
        ledger = self._ledger
        if not ledger.settled and any(ledger.used):
            await self.commit()
