"""ratekeeper's pytest plugin: the ``rk_registry`` and ``rk_clock`` fixtures.

Installed with ratekeeper, it is registered through the ``pytest11`` entry point under the name
``ratekeeper.testing.pytest_plugin``. (Packaging cannot make an entry point depend on an extra, so
``pip install "ratekeeper[testing]"`` brings pytest and this plugin comes with ratekeeper itself.)
It is inert until a test asks for one of its fixtures: it adds no hook, no option and no autouse
fixture, so a suite that does not use them runs exactly as without it. With plugin autoloading
off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``) enable it with ``-p ratekeeper.testing.pytest_plugin``
(or ``pytest_plugins = ["ratekeeper.testing.pytest_plugin"]`` in a conftest); turn it off with
``-p no:ratekeeper.testing.pytest_plugin``.

- ``rk_registry``: a fresh `Registry` (no configuration file discovered), installed as the
  default one for the test: ``ratekeeper.get_limiter``, ``configure_limiter``, ``acquire`` ... and
  the ``ratekeeper.registry`` module functions act on it, and it is closed afterwards. Code that
  bound a function at import time (``from ratekeeper import get_limiter``) keeps the real default;
  look names up as ``ratekeeper.get_limiter`` or pass the registry.
- ``rk_clock``: a frozen `TimeMachine`, started at a fixed instant (``RK_CLOCK_START``), for the
  test: every limiter built during the test without ``clock=`` (registry limiters included) runs
  on it; ``rk_clock.advance(60)`` makes a minute pass, ``rk_clock.travel_to(t)`` jumps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import ratekeeper
from ratekeeper import registry as registry_module
from ratekeeper.registry import Registry
from ratekeeper.testing.clock import TimeMachine

__all__ = ["RK_CLOCK_START", "rk_clock", "rk_registry"]

RK_CLOCK_START = 1_700_000_000.0  # 2023-11-14T22:13:20Z: a fixed, realistic Unix time
# The module-level functions that act on the default registry: its bound methods, read from
# `ratekeeper.registry` itself so that this list cannot fall behind it.
REGISTRY_FUNCTIONS = tuple(
    name
    for name in registry_module.__all__
    if getattr(getattr(registry_module, name), "__self__", None) is registry_module.default_registry
)


@pytest.fixture
def rk_clock() -> Iterator[TimeMachine]:
    """A frozen clock that every limiter built in the test uses (``rk_clock.advance(60)``)."""
    with TimeMachine(RK_CLOCK_START) as machine:
        yield machine


@pytest.fixture
def rk_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """An isolated `Registry` per test, standing in for the default one; closed afterwards."""
    isolated = Registry(discover=False)
    monkeypatch.setattr(registry_module, "default_registry", isolated)
    for name in REGISTRY_FUNCTIONS:
        method = getattr(isolated, name)
        monkeypatch.setattr(registry_module, name, method)
        monkeypatch.setattr(ratekeeper, name, method)
    try:
        yield isolated
    finally:
        isolated.close()
