"""Named stores and limiters: `Registry` and the module-level functions of `ratekeeper`."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import ratekeeper
import ratekeeper.registry as registry_module
from ratekeeper import (
    ConfigError,
    Limit,
    RateLimiter,
    RateLimitTimeout,
    Registry,
    StoreUnavailable,
)
from ratekeeper.testing import FakeClock

# A port nothing listens on: connecting is refused at once.
DEAD_REDIS = "redis://127.0.0.1:1/0"
THREADS = 16


@pytest.fixture
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry whose zero configuration looks in an empty directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RATEKEEPER_CONFIG", raising=False)
    return Registry()


async def test_sync_and_async_faces_of_a_name_share_one_state(reg: Registry) -> None:
    reg.configure_limiter("api", "2/minute", clock=FakeClock())
    sync = reg.get_limiter("api")
    assert reg.get_limiter("api") is sync
    assert isinstance(sync, RateLimiter) and sync.name == "api"
    asyncio_face = reg.get_async_limiter("api")
    assert reg.get_async_limiter("api") is asyncio_face
    assert sync.hit("k").allowed
    assert (await asyncio_face.hit("k")).allowed
    assert not sync.hit("k").allowed  # one budget of 2
    assert not (await asyncio_face.peek("k")).allowed


def test_threads_asking_for_one_name_get_one_limiter_built_once(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []

    class Counting(RateLimiter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(registry_module, "RateLimiter", Counting)
    reg.configure_limiter("api", "100/minute")
    barrier = threading.Barrier(THREADS)
    got: list[object] = []

    def ask() -> None:
        barrier.wait()
        got.append(reg.get_limiter("api"))

    threads = [threading.Thread(target=ask) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == THREADS and all(limiter is got[0] for limiter in got)
    assert built == [got[0]]


def test_redefining_a_name_needs_replace(reg: Registry) -> None:
    reg.configure_limiter("api", "1/minute")
    first = reg.get_limiter("api")
    with pytest.raises(ConfigError, match=r"'api' is already defined .*replace=True"):
        reg.configure_limiter("api", "5/minute")
    assert reg.get_limiter("api") is first
    reg.configure_limiter("api", "5/minute", replace=True)
    second = reg.get_limiter("api")
    assert second is not first and second.limits == (Limit(5, per=60),)
    reg.configure_store("main", "memory://")
    with pytest.raises(ConfigError, match="store 'main' is already defined"):
        reg.configure_store("main", "memory://")


def test_unknown_names_list_the_known_ones(reg: Registry) -> None:
    reg.configure_limiter("login", "5/minute")
    reg.configure_limiter("api", "5/minute")
    with pytest.raises(ConfigError, match=r"unknown limiter 'logni' \(did you mean 'login'\?\)"):
        reg.get_limiter("logni")
    with pytest.raises(ConfigError, match="known limiters: 'api', 'login'"):
        reg.acquire("nope")
    with pytest.raises(ConfigError, match=r"unknown store 'mian'.*known stores: 'main', 'memory'"):
        reg.configure_store("main", "memory://")
        reg.configure_limiter("x", "1/s", store="mian")


def test_store_options_apply_unless_the_limiter_sets_its_own(reg: Registry) -> None:
    reg.configure_store("down", DEAD_REDIS, on_store_error="allow", socket_timeout=0.2)
    reg.configure_limiter("open", "5/second", store="down")
    reg.configure_limiter("shut", "5/second", store="down", on_store_error="deny")
    opened = reg.get_limiter("open")
    assert opened.store.timeout == 0.2  # type: ignore[attr-defined]  # the option reached it
    decision = opened.hit("k")
    assert decision.allowed and decision.fallback
    decision = reg.get_limiter("shut").hit("k")
    assert not decision.allowed and decision.fallback
    assert reg.list_limiters()["open"]["on_store_error"] == "allow"


def test_a_bad_store_option_is_a_config_error_naming_the_store(reg: Registry) -> None:
    reg.configure_store("r", "memory://", no_such_option=1)
    reg.configure_limiter("x", "1/second", store="r")
    with pytest.raises(ConfigError, match=r"configure_store\('r'\): \[stores.r\]"):
        reg.get_limiter("x")


def test_named_stores_are_one_store_for_all_their_limiters(reg: Registry) -> None:
    reg.configure_store("local", engine="memory")  # rate-sync's way of saying memory://
    reg.configure_limiter("a", "1/minute", store="local")
    reg.configure_limiter("b", "1/minute", store="local")
    assert reg.get_limiter("a").store is reg.get_limiter("b").store
    assert reg.get_limiter("a").store is not reg.memory
    reg.configure_limiter("c", "1/minute")
    assert reg.get_limiter("c").store is reg.memory
    with pytest.raises(ConfigError, match="built-in memory store"):
        reg.configure_store("memory", DEAD_REDIS)


def test_clone_copies_and_overrides(reg: Registry) -> None:
    reg.configure_store("main", "memory://")
    reg.configure_limiter("api", "100/minute", store="main", algorithm="gcra", timeout=3)
    reg.clone_limiter("api", "api-eu", limits="50/minute")
    reg.clone_limiter("api", "api-slow", rate_per_second=2)
    eu = reg.list_limiters()["api-eu"]
    assert eu == {
        "limits": "50/60s",
        "store": "main",
        "algorithm": "gcra",
        "timeout": 3.0,
    }
    assert reg.get_limiter("api-slow").limits == (Limit(2, per=1, burst=1),)
    with pytest.raises(ConfigError, match="unknown limiter 'nope'"):
        reg.clone_limiter("nope", "x")


def test_list_stores_masks_passwords(reg: Registry) -> None:
    reg.configure_store("main", "redis://:hunter2@127.0.0.1:1/0")
    stores = reg.list_stores()
    assert stores["main"] == {"url": "redis://:***@127.0.0.1:1/0"}
    assert stores["memory"] == {"url": "memory://"}


def test_acquire_blocks_with_the_configured_timeout(reg: Registry) -> None:
    reg.configure_limiter("once", "1/minute", timeout=0)
    with reg.acquire("once") as permit:
        assert permit.allowed
    with pytest.raises(RateLimitTimeout), reg.acquire("once"):
        pass
    with reg.acquire("once", key="other"):  # the key defaults to the name; another key is fresh
        pass


async def test_acquire_is_awaitable_and_an_async_context_manager(reg: Registry) -> None:
    reg.configure_limiter("jobs", "100/second", max_concurrent=1, timeout=0)
    async with reg.acquire("jobs", key="t7") as permit:
        assert permit.allowed
        with pytest.raises(RateLimitTimeout):
            await reg.acquire("jobs", key="t7")  # the slot is held for the block
    assert (await reg.acquire("jobs", key="t7")).allowed
    reg.configure_limiter("one", "1/minute", timeout=0)
    await reg.acquire("one")
    with pytest.raises(RateLimitTimeout):
        await reg.acquire("one")
    await reg.acquire("one", timeout=None, cost=0)  # an explicit timeout overrides the config


def test_sync_acquire_holds_the_concurrency_slot(reg: Registry) -> None:
    reg.configure_limiter("jobs", "100/second", max_concurrent=1, timeout=0)
    held = reg.acquire("jobs", key="t")
    with held, pytest.raises(RateLimitTimeout), reg.acquire("jobs", key="t"):
        pass
    with reg.acquire("jobs", key="t"):
        pass


async def test_rate_limited_wraps_def_and_async_def(reg: Registry) -> None:
    calls: list[tuple[str, int]] = []

    @reg.rate_limited("api", key=lambda user, **_: f"user:{user}", cost=lambda user, n=1: n)
    async def fetch(user: str, n: int = 1) -> str:
        calls.append((user, n))
        return user.upper()

    @reg.rate_limited("api")
    def plain(value: int) -> int:
        return value * 2

    assert inspect.iscoroutinefunction(fetch) and fetch.__name__ == "fetch"
    assert not inspect.iscoroutinefunction(plain)
    # Decorated before the limiter exists: the name is looked up at the first call.
    reg.configure_limiter("api", "3/minute", timeout=0)
    assert await fetch("ann", n=2) == "ANN"
    assert await fetch("bob") == "BOB"
    with pytest.raises(RateLimitTimeout):
        await fetch("ann", n=2)  # ann's budget of 3 has 1 left
    assert calls == [("ann", 2), ("bob", 1)]
    assert [plain(1), plain(2), plain(3)] == [2, 4, 6]  # key: the name "api", its own budget
    with pytest.raises(RateLimitTimeout):
        plain(4)


def test_initialize_checks_the_store_at_startup(reg: Registry) -> None:
    reg.configure_limiter("ok", "1/second")
    reg.initialize_limiter("ok")
    reg.initialize_all_limiters()
    reg.configure_store("down", DEAD_REDIS)
    reg.configure_limiter("broken", "1/second", store="down")
    with pytest.raises(StoreUnavailable):
        reg.initialize_limiter("broken")
    with pytest.raises(StoreUnavailable):
        reg.initialize_all_limiters()


def test_a_failing_load_applies_nothing(reg: Registry, tmp_path: Path) -> None:
    reg.configure_limiter("api", "1/second")
    before = (reg.list_limiters(), reg.list_stores())
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[stores.main]\nurl = "memory://"\n\n'
        '[limiters.good]\nlimits = "1/second"\nstore = "main"\n\n'
        '[limiters.api]\nlimits = "9/second"\n'  # defined in code already
    )
    with pytest.raises(ConfigError, match=r"bad.toml: \[limiters.api\] limiter 'api' is already"):
        reg.load_config(bad)
    assert (reg.list_limiters(), reg.list_stores()) == before
    bad.write_text('[limiters.good]\nlimits = "1/second"\nstore = "nowhere"\n')
    with pytest.raises(ConfigError, match=r"\[limiters.good\] field 'store': unknown store"):
        reg.load_config(bad)
    assert (reg.list_limiters(), reg.list_stores()) == before
    ok = tmp_path / "ok.toml"
    ok.write_text('[limiters.api]\nlimits = "9/second"\n')
    assert reg.load_config(ok, replace=True) == ok
    assert reg.get_limiter("api").limits == (Limit(9, per=1),)


def test_zero_configuration_reads_the_file_at_first_use(
    reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ratekeeper.toml").write_text(
        '[stores.main]\nurl = "memory://"\n\n'
        '[limiters.api]\nlimits = "100/minute"\nstore = "main"\n'
    )
    monkeypatch.setenv("RATEKEEPER_LIMITERS__API__TIMEOUT", "7")
    assert reg.get_limiter("api").limits == (Limit(100, per=60),)
    assert reg.list_limiters()["api"]["timeout"] == 7.0
    assert reg.list_stores()["main"] == {"url": "memory://"}


def test_a_configured_name_never_reads_a_file(reg: Registry, tmp_path: Path) -> None:
    (tmp_path / "ratekeeper.toml").write_text("this is [not toml")
    reg.configure_limiter("api", "1/second")
    assert reg.get_limiter("api").hit("k").allowed
    with pytest.raises(ConfigError, match=r"ratekeeper.toml: not valid TOML"):
        reg.get_limiter("other")  # an unknown name: now the file is read


def test_the_module_functions_act_on_the_default_registry() -> None:
    assert ratekeeper.configure_limiter.__self__ is registry_module.default_registry  # type: ignore[attr-defined]
    name = "test_registry.default"
    ratekeeper.configure_limiter(name, "1/minute", timeout=0)
    assert ratekeeper.get_limiter(name) is registry_module.default_registry.get_limiter(name)
    assert name in ratekeeper.list_limiters()


def test_import_reads_no_file(tmp_path: Path) -> None:
    (tmp_path / "ratekeeper.toml").write_text("this is [not toml")
    (tmp_path / "ratekeeper.yaml").write_text("limiters: [")
    code = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda event, args: opened.append(str(args[0]))"
        " if event == 'open' else None)\n"
        "import ratekeeper\n"
        "bad = [p for p in opened if 'ratekeeper.' in p.rsplit('/', 1)[-1] and"
        " p.endswith(('.toml', '.yaml')) or p.endswith('pyproject.toml')]\n"
        "assert not bad, bad\n"
        "try:\n"
        "    ratekeeper.get_limiter('api')\n"
        "except ratekeeper.ConfigError as exc:\n"
        "    assert 'ratekeeper.toml: not valid TOML' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('the file was not read at first use')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
