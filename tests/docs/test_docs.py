"""Every ```python block of the documentation site (docs/**/*.md) runs, each in a fresh folder,
as tests/test_readme.py does for the README (store URLs point at the servers of scripts/test).

A fenced block is either Python that runs or a language that is not Python: a ``py`` or
``pycon`` block, which this test would not run, is refused, so no Python example on the site goes
untested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)
FENCE = re.compile(r"^( *)```([\w+-]*)[^\n]*\n(.*?)^\1```", re.S | re.M)
BLOCK_TIMEOUT = 60  # seconds for one block (the slowest start a framework and a test client)

# Placeholders used on the pages, replaced by the servers of this test run (as in the README).
URLS = {
    "redis://localhost:6379/0": "RATEKEEPER_REDIS_URL",
    "postgresql://localhost/app": "RATEKEEPER_POSTGRES_URL",
    "nats://localhost:4222": "RATEKEEPER_NATS_URL",
}
# The README's blocks run on database 0 of the same Redis server with the same keys and exact
# counts (a page repeats some of them), so the site's blocks get a database of their own.
DOCS_REDIS_DB = 1
NOT_PYTHON = {"bash", "console", "text", "toml", "yaml", "json", "ini", "http", "sql", ""}


def blocks() -> list[tuple[str, str, str]]:
    """(page, language, code) for every fenced block of the site."""
    found = []
    for page in PAGES:
        for indent, language, code in FENCE.findall(page.read_text()):
            code = "\n".join(line.removeprefix(indent) for line in code.splitlines())
            found.append((str(page.relative_to(DOCS)), language, code))
    return found


BLOCKS = blocks()
PYTHON = [(page, code) for page, language, code in BLOCKS if language == "python"]
IDS = [f"{page}#{i}" for i, (page, _) in enumerate(PYTHON)]


def test_every_block_is_python_that_runs_or_not_python() -> None:
    other = {(page, language) for page, language, _ in BLOCKS}
    strays = sorted(o for o in other if o[1] != "python" and o[1] not in NOT_PYTHON)
    assert not strays, f"blocks this test would not run (tag them python): {strays}"


def test_every_page_of_the_guide_has_runnable_examples() -> None:
    with_code = {page for page, _ in PYTHON}
    guide = [
        p
        for p in PAGES
        if p.parent == DOCS and p.name not in {"index.md", "benchmarks.md", "examples.md"}
    ]
    missing = [p.name for p in guide if p.name not in with_code]
    assert not missing, missing
    coming_from = [p for p in (DOCS / "coming-from").glob("*.md") if p.name != "index.md"]
    assert len(coming_from) >= 9
    assert all(f"coming-from/{p.name}" in with_code for p in coming_from)


def server_url(env: str) -> str:
    url = os.environ[env]
    if env == "RATEKEEPER_REDIS_URL":
        url = urlsplit(url)._replace(path=f"/{DOCS_REDIS_DB}").geturl()
    return url


@pytest.mark.parametrize(("page", "code"), PYTHON, ids=IDS)
def test_docs_block_runs(page: str, code: str, tmp_path: Path) -> None:
    for placeholder, env in URLS.items():
        if placeholder in code:
            assert env in os.environ, f"{env} is not set: run the suite with scripts/test"
            code = code.replace(placeholder, server_url(env))
    script = tmp_path / "block.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{page}\n{code}\n---\n{result.stdout}\n{result.stderr}"
