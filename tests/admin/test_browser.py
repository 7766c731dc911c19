"""The dashboard in a real headless Chromium (/usr/bin/chromium, driven through the DevTools
protocol) against the admin app served by uvicorn: the page loads and lists the limiters, the
chart follows new decisions, the form looks a key up and resets it, and markup in keys and names
is shown as text, never run.

``RATEKEEPER_DASHBOARD_PNG=docs/dashboard.png`` also saves the page's screenshot there."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratekeeper import Registry
from ratekeeper.admin import create_admin_app

from .cdp import Browser
from .conftest import BASIC, TOKEN
from .server import served

EVIL_KEY = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
EVIL_NAME = "<b onmouseover=window.__xss=3>bold</b>"


@pytest.fixture
def browser() -> Iterator[Browser]:
    browser = Browser()
    try:
        yield browser
    finally:
        browser.close()


def test_dashboard_in_headless_chromium(browser: Browser) -> None:
    registry = Registry(discover=False)
    registry.configure_limiter("api", "5/minute")
    registry.configure_limiter("login", "3/minute;20/hour", algorithm="sliding_window")
    registry.configure_limiter(EVIL_NAME, "10/second", shadow=True)
    app = create_admin_app(registry, token=TOKEN)
    api = registry.get_limiter("api")
    try:
        with served(app) as base:
            browser.call("Network.enable")
            browser.call("Network.setExtraHTTPHeaders", headers=BASIC)
            browser.call("Page.enable")
            browser.call("Page.navigate", url=f"{base}/")
            browser.wait_for("document.body && Number(document.body.dataset.updates) >= 1")

            names = browser.evaluate(
                "Array.from(document.querySelectorAll('#limiters tbody tr'))"
                ".map(row => row.cells[0].textContent)"
            )
            assert names == sorted(["api", "login", EVIL_NAME])
            limits = browser.evaluate(
                "document.querySelector('#limiters tbody tr[data-name=login]').cells[1].textContent"
            )
            assert limits == "3/60s; 20/3600s"

            # the chart follows new decisions
            before = browser.evaluate(
                "Number(document.getElementById('line-allowed').dataset.total)"
            )
            for user in range(3):
                api.hit(f"user:{user}")
            browser.wait_for(
                f"Number(document.getElementById('line-allowed').dataset.total) >= {before + 3}"
            )
            assert browser.evaluate(
                "document.getElementById('line-allowed').getAttribute('points')"
            )

            # markup in a denied key and in a limiter name is text
            for _ in range(6):
                api.hit(EVIL_KEY)
            shown = browser.wait_for(
                "Array.from(document.querySelectorAll('#top-denied td.key'))"
                ".map(td => td.textContent).join('\\n')"
            )
            assert shown == EVIL_KEY
            assert (
                browser.evaluate(
                    "document.querySelectorAll('main script, main img, main b').length"
                )
                == 0
            )
            assert browser.evaluate("typeof window.__xss") == "undefined"

            # the form looks a key up, then resets it
            api.hit("user:9")
            browser.evaluate(
                "document.getElementById('key-limiter').value = 'api';"
                "document.getElementById('key-input').focus()"
            )
            browser.call("Input.insertText", text="user:9")
            browser.evaluate("document.getElementById('lookup').click()")
            result = browser.wait_for(
                "document.getElementById('key-result').textContent.includes('remaining') && "
                "document.getElementById('key-result').textContent"
            )
            assert "would be allowed" in result and "remaining: 3 of 5 (5/60s)" in result
            browser.evaluate("document.getElementById('reset').click()")
            browser.wait_for(
                "document.getElementById('key-result').textContent === 'reset: api / user:9'"
            )
            assert api.peek("user:9").remaining == 4
            browser.evaluate("document.getElementById('lookup').click()")
            browser.wait_for(
                "document.getElementById('key-result').textContent.includes('remaining: 4 of 5')"
            )

            # a lookup of a key full of markup shows it as text too
            browser.evaluate(
                f"document.getElementById('key-input').value = {json.dumps(EVIL_KEY)};"
                "document.getElementById('lookup').click()"
            )
            browser.wait_for(
                "document.getElementById('key-result').textContent.includes('would be denied')"
            )
            assert browser.evaluate("document.querySelectorAll('#key-result *').length") == 0
            assert browser.evaluate("typeof window.__xss") == "undefined"

            png = browser.screenshot()
            assert png.startswith(b"\x89PNG")
            target = os.environ.get("RATEKEEPER_DASHBOARD_PNG")
            if target:
                Path(target).write_bytes(png)
    finally:
        app.close()
