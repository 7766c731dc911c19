"""Configuration files: formats, discovery, environment, other libraries' fields, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ratekeeper import ConfigError, Limit, Registry
from ratekeeper.config import discover, load

FULL_TOML = """
[stores.main]
url = "memory://${RK_TEST_HOST:-ignored}"
on_store_error = "allow"

[limiters.api]
limits = "100/minute"
store = "main"
algorithm = "gcra"
timeout = 30.0
max_concurrent = 50

[limiters.login]
limits = "5/5 minutes"
algorithm = "sliding_window"
store = "main"
"""

FULL_YAML = """
stores:
  main:
    url: "memory://"
    on_store_error: allow
limiters:
  api:
    limits: 100/minute
    store: main
    algorithm: gcra
    timeout: 30.0
    max_concurrent: 50
  login:
    limits: [5/5 minutes, 100/day]
    algorithm: sliding_window
    store: main
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RATEKEEPER_CONFIG", raising=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_complete_toml_file(tmp_path: Path) -> None:
    config = load(write(tmp_path, "ratekeeper.toml", FULL_TOML))
    api = config.limiters["api"]
    assert api.limits == (Limit(100, per=60),) and api.store == "main" and api.timeout == 30.0
    assert api.options == {"algorithm": "gcra", "max_concurrent": 50}
    assert config.limiters["login"].limits == (Limit(5, per=300),)
    main = config.stores["main"]
    assert main.url == "memory://ignored" and main.on_store_error == "allow"


def test_yaml_and_pyproject_say_the_same(tmp_path: Path) -> None:
    from_yaml = load(write(tmp_path, "ratekeeper.yaml", FULL_YAML))
    assert from_yaml.limiters["api"].options == {"algorithm": "gcra", "max_concurrent": 50}
    assert from_yaml.limiters["login"].limits == (Limit(5, per=300), Limit(100, per=86400))
    pyproject = "[project]\nname = 'x'\n" + FULL_TOML.replace(
        "[stores.", "[tool.ratekeeper.stores."
    )
    pyproject = pyproject.replace("[limiters.", "[tool.ratekeeper.limiters.")
    from_pyproject = load(write(tmp_path, "pyproject.toml", pyproject))
    from_toml = load(write(tmp_path, "ratekeeper.toml", FULL_TOML))
    for config in (from_yaml, from_pyproject):
        a, b = config.limiters["api"], from_toml.limiters["api"]
        assert (a.limits, a.store, a.timeout, a.options) == (
            b.limits,
            b.store,
            b.timeout,
            b.options,
        )


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert discover() is None
    write(tmp_path, "pyproject.toml", "[project]\nname = 'x'\n")
    assert discover() is None  # a pyproject without [tool.ratekeeper] is not a configuration
    write(tmp_path, "pyproject.toml", "[tool.ratekeeper.limiters.a]\nlimits = '1/s'\n")
    assert discover() == tmp_path / "pyproject.toml"
    write(tmp_path, "ratekeeper.yaml", FULL_YAML)
    assert discover() == tmp_path / "ratekeeper.yaml"
    write(tmp_path, "ratekeeper.toml", FULL_TOML)
    assert discover() == tmp_path / "ratekeeper.toml"
    elsewhere = write(tmp_path, "elsewhere.yml", FULL_YAML)
    monkeypatch.setenv("RATEKEEPER_CONFIG", str(elsewhere))
    assert discover() == elsewhere
    monkeypatch.setenv("RATEKEEPER_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"RATEKEEPER_CONFIG=.*missing.toml: no such file"):
        discover()


def test_variables_and_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        "ratekeeper.toml",
        '[stores.main]\nurl = "redis://${RK_TEST_HOST}:6379/0"\n\n'
        '[limiters.api]\nlimits = "100/minute"\nstore = "main"\n'
        'timeout = "${RK_TEST_TIMEOUT:-2.5}"\n'
        '\n[limiters.api-eu]\nlimits = "1/second"\n',
    )
    monkeypatch.setenv("RK_TEST_HOST", "cache.internal")
    config = load(path)
    assert config.stores["main"].url == "redis://cache.internal:6379/0"
    assert config.limiters["api"].timeout == 2.5
    monkeypatch.setenv("RATEKEEPER_LIMITERS__API__LIMITS", "200/minute")
    monkeypatch.setenv("RATEKEEPER_LIMITERS__API_EU__MAX_CONCURRENT", "3")
    monkeypatch.setenv("RATEKEEPER_STORES__MAIN__URL", "memory://")
    monkeypatch.setenv("RATEKEEPER_LIMITERS__EXTRA__LIMITS", "7/hour")
    config = load(path)
    assert config.limiters["api"].limits == (Limit(200, per=60),)
    assert config.limiters["api-eu"].options == {"max_concurrent": 3}
    assert config.stores["main"].url == "memory://"
    assert config.limiters["extra"].limits == (Limit(7, per=3600),)
    # a name configured in code is not redefined by the environment
    assert "extra" not in load(path, defined=lambda table, name: name == "extra").limiters


def test_other_libraries_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ratekeeper.toml",
        # rate-sync
        '[stores.local]\nengine = "memory"\n\n'
        '[stores.redis]\nengine = "redis"\nurl = "redis://127.0.0.1:6379/0"\n\n'
        '[limiters.api]\nstore = "local"\nrate_per_second = 10.0\ntimeout = 30.0\n'
        "max_concurrent = 5\n\n"
        "[limiters.slow]\nrate_per_second = 0.5\n\n"
        '[limiters.login]\nalgorithm = "sliding_window"\nlimit = 5\nwindow_seconds = 300\n\n'
        # ratelink
        '[limiters.rl]\nalgorithm = "token_bucket"\nlimit = 100\nwindow = 60\n\n'
        # netrun
        "[limiters.nr]\nrate = 10\nperiod = 2\nburst = 20\n",
    )
    config = load(path)
    assert config.stores["local"].url == "memory://"
    assert config.stores["redis"].url == "redis://127.0.0.1:6379/0"
    limits = {name: d.limits for name, d in config.limiters.items()}
    assert limits == {
        "api": (Limit(10, per=1, burst=1),),  # rate-sync spaces requests evenly
        "slow": (Limit(1, per=2, burst=1),),
        "login": (Limit(5, per=300),),
        "rl": (Limit(100, per=60),),
        "nr": (Limit(10, per=2, burst=20),),
    }
    assert config.limiters["api"].timeout == 30.0


def test_rate_sync_quick_start_ports_by_renaming(tmp_path: Path) -> None:
    write(
        tmp_path,
        "ratekeeper.toml",
        '[stores.local]\nengine = "memory"\n\n'
        '[limiters.api]\nstore = "local"\nrate_per_second = 10.0\ntimeout = 30.0\n',
    )
    registry = Registry()
    with registry.acquire("api"):
        pass
    assert registry.list_limiters()["api"]["limits"] == "10/1s (burst 1)"


def test_yaml_needs_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "ratekeeper.yaml", FULL_YAML)
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigError, match=r"ratekeeper.yaml: .*pip install ratekeeper\[yaml\]"):
        load(path)


BAD_INPUT = [
    ("bad.toml", "[limiters.api\nlimits = 1", r"bad.toml: not valid TOML"),
    ("bad.yaml", "limiters: [unclosed", r"bad.yaml: not valid YAML"),
    (
        "bad.yaml",
        "limiters:\n  api:\n    limits: 1/s\n  api:\n    limits: 2/s\n",
        r"bad.yaml: line 4: duplicate key 'api'",
    ),
    (
        "bad.toml",
        '[limiters.api]\nlimts = "1/s"\n',
        r"bad.toml: \[limiters.api\] unknown field 'limts' \(did you mean 'limits'\?\)",
    ),
    (
        "bad.toml",
        '[limiter.api]\nlimits = "1/s"\n',
        r"bad.toml: unknown table \[limiter\] \(did you mean 'limiters'\?\)",
    ),
    (
        "bad.toml",
        '[limiters.api]\nlimits = "1/s"\ntimeout = "soon"\n',
        r"bad.toml: \[limiters.api\] field 'timeout' must be a number, got str 'soon'",
    ),
    (
        "bad.toml",
        '[limiters.api]\nlimits = "1/s"\ntimeout = -1\n',
        r"\[limiters.api\] field 'timeout' must be >= 0, got -1",
    ),
    (
        "bad.toml",
        '[limiters.api]\nlimits = "1/s"\nmax_concurrent = -2\n',
        r"\[limiters.api\] field 'max_concurrent' must be > 0",
    ),
    (
        "bad.toml",
        '[limiters.api]\nlimits = "1/s"\nalgorithm = "token_buckt"\n',
        r"\[limiters.api\] field 'algorithm': unknown value 'token_buckt' "
        r"\(did you mean 'token_bucket'\?\)",
    ),
    (
        "bad.toml",
        '[limiters.api]\nlimits = "100/fortnight"\n',
        r"\[limiters.api\] field 'limits': unknown time unit 'fortnight' in '100/fortnight'",
    ),
    (
        "bad.toml",
        '[stores.main]\nurl = "mongo://x"\n',
        r"bad.toml: \[stores.main\] field 'url': unknown store URL scheme in 'mongo://x'",
    ),
    (
        "bad.toml",
        '[stores.main]\nurll = "memory://"\n',
        r"\[stores.main\] unknown field 'urll' \(did you mean 'url'\?\)",
    ),
    (
        "bad.toml",
        '[stores.main]\nengine = "redis"\nurl = "nats://x"\n',
        r"\[stores.main\] engine 'redis' does not match the URL scheme 'nats://'",
    ),
    (
        "bad.toml",
        '[limiters.api]\nlimits = "1/s"\nstore = "mian"\n[stores.main]\nurl = "memory://"\n',
        r"\[limiters.api\] field 'store': unknown store 'mian' \(did you mean 'main'\?\); "
        r"known stores: 'main', 'memory'",
    ),
    (
        "bad.toml",
        '[limiters.api]\nlimits = "1/s"\nrate_per_second = 3\n',
        r"\[limiters.api\] fields 'limits', 'rate_per_second' describe limits in two ways",
    ),
    ("bad.toml", "[limiters.api]\ntimeout = 3\n", r"\[limiters.api\] no limits"),
    (
        "bad.toml",
        '[stores.main]\nurl = "redis://${RK_TEST_UNSET}/0"\n',
        r"\[stores.main\] field 'url': environment variable 'RK_TEST_UNSET' is not set",
    ),
    ("bad.json", "{}", r"bad.json: unknown configuration format"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_INPUT)
def test_bad_input_is_a_config_error_at_load_time(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    registry = Registry(discover=False)
    registry.configure_limiter("kept", "1/second")
    before = registry.list_limiters(), registry.list_stores()
    with pytest.raises(ConfigError, match=message):
        registry.load_config(write(tmp_path, name, text))
    assert (registry.list_limiters(), registry.list_stores()) == before


def test_a_bad_environment_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "ratekeeper.toml", '[limiters.api]\nlimits = "1/s"\n')
    monkeypatch.setenv("RATEKEEPER_LIMITERS__API__TIMEOUT", "soon")
    with pytest.raises(
        ConfigError,
        match=r"RATEKEEPER_LIMITERS__API__TIMEOUT: \[limiters.api\] field 'timeout' must be a num",
    ):
        load(path)
    monkeypatch.delenv("RATEKEEPER_LIMITERS__API__TIMEOUT")
    monkeypatch.setenv("RATEKEEPER_LIMITER__API__LIMITS", "2/s")
    with pytest.raises(ConfigError, match=r"RATEKEEPER_LIMITER__API__LIMITS: unknown table"):
        load(path)


def test_a_name_in_a_file_and_in_code_is_a_duplicate(tmp_path: Path) -> None:
    registry = Registry(discover=False)
    registry.configure_store("main", "memory://")
    path = write(tmp_path, "ratekeeper.toml", '[stores.main]\nurl = "memory://"\n')
    with pytest.raises(ConfigError, match=r"\[stores.main\] store 'main' is already defined"):
        registry.load_config(path)
    registry.load_config(path, replace=True)
