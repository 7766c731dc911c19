"""The sync twins are generated from the asyncio sources (scripts/unasync.py) and must not drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_sync_modules_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_drifted_twin_is_reported(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import unasync
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    source = "async def f(store: AsyncStore) -> None:\n    await store.ping()  # sync: pass\n"
    assert unasync.unasync(source, "x.py").endswith("def f(store: Store) -> None:\n    pass\n")
