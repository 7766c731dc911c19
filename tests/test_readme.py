"""Every ```python block of the README runs (store URLs point at the servers of scripts/test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)

# Placeholders used in the README, replaced by the servers of this test run.
URLS = {
    "redis://localhost:6379/0": "RATEKEEPER_REDIS_URL",
    "postgresql://localhost/app": "RATEKEEPER_POSTGRES_URL",
    "nats://localhost:4222": "RATEKEEPER_NATS_URL",
    "dynamodb://us-east-1/ratekeeper": "RATEKEEPER_DYNAMODB_URL",
}


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code: str, tmp_path: Path) -> None:
    for placeholder, env in URLS.items():
        if placeholder in code:
            assert env in os.environ, f"{env} is not set: run the suite with scripts/test"
            code = code.replace(placeholder, os.environ[env])
    script = tmp_path / "block.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, f"{code}\n---\n{result.stdout}\n{result.stderr}"
