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
