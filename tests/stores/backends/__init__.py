"""The stores the conformance suite runs against.

Each module of this package defines ``BACKENDS: list[Backend]``. A backend builds fresh stores
that trust the caller's clock (the ``now`` the limiter passes), so that one trace driven by a
FakeClock can be replayed on every store and compared with the pure reference. A backend whose
server is missing fails its tests; it never skips.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ratekeeper.stores import AsyncStore, Store


@dataclass
class Backend:
    name: str
    make_sync: Callable[[], Store]
    make_async: Callable[[], AsyncStore]  # called inside the running event loop
    marks: tuple[Any, ...] = field(default=())
    # Whether several OS processes can share one store (true for any server-backed store).
    shared_between_processes: bool = True
    # For the fault suite (tests/stores/test_faults.py), backends whose client talks to one server
    # only: that server's URL, and store factories for another URL (a FaultProxy in front of the
    # server) with the library's default timeouts. Cluster and Sentinel clients learn other
    # addresses from the servers, so a proxy cannot stand in front of all their traffic.
    url: Callable[[], str] | None = None
    make_at: Callable[[str], tuple[Callable[[], Store], Callable[[], AsyncStore]]] | None = None
    # Whether the store must apply several checks at once (the conformance kit's
    # applies_checks): True runs the policy checks in full, failing a store without apply_checks.
    applies_checks: bool | None = None


def all_backends() -> list[Backend]:
    found: list[Backend] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(module.BACKENDS)
    return found
