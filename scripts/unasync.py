#!/usr/bin/env python3
"""Generate the synchronous twin of each hand-written asyncio module (httpcore's way).

    scripts/unasync.py           write every generated file
    scripts/unasync.py --check   exit 1 (naming the file) when a generated file is out of date

Rules, applied line by line to the source: ``async def``/``async with``/``async for`` lose their
``async``, ``await`` goes, ``__aenter__``/``__aexit__`` become ``__enter__``/``__exit__``, and the
names in ``NAMES`` become their sync twins. A line ending in ``# sync: TEXT`` becomes TEXT (same
indentation); a line ending in ``# async-only`` and the lines between ``# async-only: begin`` and
``# async-only: end`` are left out. The result is formatted with ruff.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [
    ("src/ratekeeper/_async_limiter.py", "src/ratekeeper/_sync_limiter.py"),
    ("src/ratekeeper/stores/redis/_async_store.py", "src/ratekeeper/stores/redis/_sync_store.py"),
    (
        "src/ratekeeper/stores/postgres/_async_store.py",
        "src/ratekeeper/stores/postgres/_sync_store.py",
    ),
    (
        "src/ratekeeper/policies/_async_reservation.py",
        "src/ratekeeper/policies/_sync_reservation.py",
    ),
    ("src/ratekeeper/policies/_async_chain.py", "src/ratekeeper/policies/_sync_chain.py"),
]
NAMES = {
    "AsyncRateLimiter": "RateLimiter",
    "AsyncPostgresStore": "PostgresStore",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncConnection": "Connection",
    "_async_connection_class": "_connection_class",
    "AsyncPermit": "Permit",
    "AsyncReservation": "Reservation",
    "AsyncChain": "Chain",
    "AsyncCheckStore": "CheckStore",
    "_async_reservation": "_sync_reservation",
    "AsyncMemoryStore": "MemoryStore",
    "AsyncStore": "Store",
    "AsyncRedisStore": "RedisStore",
    "AsyncWire": "Wire",
    "async_store_from_url": "store_from_url",
    "async_sleeper": "sleeper",
    "drive_async": "drive",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
}
WORDS = re.compile(r"\b(" + "|".join(map(re.escape, NAMES)) + r")\b")
KEYWORDS = [
    (re.compile(r"\basync (def|with|for)\b"), r"\1"),
    (re.compile(r"\bawait "), ""),
]
PRAGMA = re.compile(r"^(?P<indent>\s*)(?P<code>.*?)\s*# sync: (?P<text>.*)$")


def unasync(source: str, origin: str) -> str:
    out: list[str] = []
    skipping = False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == "# async-only: begin":
            skipping = True
            continue
        if stripped == "# async-only: end":
            skipping = False
            continue
        if skipping or line.rstrip().endswith("# async-only"):
            continue
        pragma = PRAGMA.match(line)
        if pragma:
            out.append(pragma["indent"] + pragma["text"])
            continue
        for pattern, replacement in KEYWORDS:
            line = pattern.sub(replacement, line)
        out.append(WORDS.sub(lambda m: NAMES[m[1]], line))
    banner = f"# Generated from {origin} by scripts/unasync.py; do not edit.\n"
    return format_python(banner + "\n".join(out) + "\n")


def format_python(code: str) -> str:
    ruff = Path(sys.executable).with_name("ruff")
    command = [str(ruff) if ruff.exists() else "ruff"]
    for step in (["check", "--fix-only", "--select", "I,F401", "-"], ["format", "-"]):
        done = subprocess.run(
            [*command, *step, "--stdin-filename", "generated.py"],
            input=code,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        code = done.stdout
    return code


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for source, target in PAIRS:
        want = unasync((ROOT / source).read_text(), source)
        path = ROOT / target
        if path.exists() and path.read_text() == want:
            continue
        if check:
            stale.append(target)
        else:
            path.write_text(want)
            print(f"unasync: wrote {target}")
    for target in stale:
        print(f"unasync: {target} is out of date; run scripts/unasync.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
