"""Concurrency caps as leases: at most ``limit`` holders per key, each lease expiring at its
deadline so that a crashed holder cannot keep a slot. State: a tuple of ``(lease_id, expires_at)``.
"""

from __future__ import annotations

from ratekeeper.algorithms.base import State

__all__ = ["acquire_lease", "release_lease"]


def acquire_lease(
    state: State, now: float, lease_id: str, limit: int, ttl: float
) -> tuple[State, float]:
    """Try to take a slot. Returns the new state and 0.0 when granted, else the unchanged state and
    the seconds until the earliest lease expires (an upper bound on the wait)."""
    leases = (
        tuple(lease for lease in state if lease[1] > now and lease[0] != lease_id) if state else ()
    )
    if len(leases) < limit:
        return (*leases, (lease_id, now + ttl)), 0.0
    return state, max(min(lease[1] for lease in leases) - now, 0.0)


def release_lease(state: State, now: float, lease_id: str) -> State:
    """Give a slot back (a lease that already expired or was never held is ignored)."""
    if not state:
        return None
    leases = tuple(lease for lease in state if lease[1] > now and lease[0] != lease_id)
    return leases or None
