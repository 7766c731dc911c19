import subprocess
import sys


def test_demo_runs_and_shows_every_algorithm():
    result = subprocess.run(
        [sys.executable, "-m", "ratekeeper", "demo"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("token_bucket", "leaky_bucket", "fixed_window", "sliding_window", "sliding_log"):
        assert name in out
    assert out.count("✓ ✓ ✓ ✓ ✓ ✗ ✗") == 6
    assert "RateLimit-Policy:" in out and "Retry-After: 1" in out


def test_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "ratekeeper", "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr


CONFIG = """
[stores.main]
url = "redis://:secret@127.0.0.1:6379/0"
on_store_error = "allow"

[limiters.api]
limits = "100/minute"
store = "main"
timeout = 30

[limiters.login]
limits = "5/5 minutes"
algorithm = "sliding_window"
"""


def run_cli(*argv: str) -> tuple[int, str, str]:
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    from ratekeeper.cli import main

    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_check_config_prints_the_resolved_limiters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RATEKEEPER_CONFIG", raising=False)
    (tmp_path / "ratekeeper.toml").write_text(CONFIG)
    code, out, err = run_cli("check-config")
    assert code == 0, err
    assert "ratekeeper.toml: ok" in out
    assert "api: limits='100/60s', store='main', algorithm='token_bucket', timeout=30.0" in out
    assert "on_store_error='allow'" in out  # the store's policy, resolved for its limiter
    assert "secret" not in out and "redis://:***@127.0.0.1" in out
    code, out, _ = run_cli("limiters")
    assert code == 0
    assert out.splitlines() == [
        "api\t100/60s\ttoken_bucket\tmain",
        "login\t5/300s\tsliding_window\tmemory",
    ]


def test_check_config_exits_1_with_the_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RATEKEEPER_CONFIG", raising=False)
    code, _, err = run_cli("check-config")
    assert code == 1 and "no configuration file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("limiters:\n  api:\n    limits: 1/s\n    timeout: soon\n")
    code, out, err = run_cli("check-config", str(bad))
    assert code == 1 and out == ""
    assert "bad.yaml: [limiters.api] field 'timeout' must be a number, got str 'soon'" in err
    (tmp_path / "ratekeeper.toml").write_text("[limiters.api]\nlimts = '1/s'\n")
    code, _, err = run_cli("limiters")
    assert code == 1 and "did you mean 'limits'?" in err
