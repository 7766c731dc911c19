"""Write docs/dashboard.png: the admin dashboard in headless Chromium, with five minutes of
made-up traffic (`python scripts/dashboard_screenshot.py [PATH]`, from the repository root).

The history before "now" is fed to the dashboard's observer as events with past times (the
series are per wall-clock second); the last seconds and the counters are real decisions."""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.admin.cdp import Browser  # noqa: E402
from tests.admin.conftest import BASIC, TOKEN  # noqa: E402
from tests.admin.server import served  # noqa: E402

from ratekeeper import Registry  # noqa: E402
from ratekeeper.admin import create_admin_app  # noqa: E402
from ratekeeper.admin.stats import SERIES_SECONDS  # noqa: E402
from ratekeeper.decision import Decision  # noqa: E402
from ratekeeper.events import Event  # noqa: E402
from ratekeeper.limits import Limit  # noqa: E402

SETTLE = 2.5  # seconds for the page to poll twice after loading


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png"
    random.seed(7)
    registry = Registry(discover=False)
    registry.configure_limiter("api", "100/minute", algorithm="gcra")
    registry.configure_limiter("login", "5/5 minutes", algorithm="sliding_window")
    registry.configure_limiter("search", "20/second;1000/hour", shadow_limits="10/second")
    registry.configure_limiter("exports", "10/hour", max_concurrent=2)
    app = create_admin_app(registry, token=TOKEN)
    now = int(time.time())
    decision = Decision(True, 100, 50, 1.0, 0.0, 0.0, Limit(100, 60))
    for second in range(now - SERIES_SECONDS, now):
        wave = 1 + math.sin((second - now) / 40)
        burst = 150 if now - 150 < second < now - 110 else 0
        for _ in range(int(120 * wave + random.random() * 40)):
            app.stats.observe(
                Event("hit", "api", "gcra", "memory", "u", "allowed", decision, second)
            )
        for _ in range(int(burst * random.random() + 10 * wave * random.random())):
            key = random.choice(("user:7", "user:7", "user:12", "<script>alert(1)</script>"))
            app.stats.observe(
                Event("hit", "api", "gcra", "memory", key, "denied", decision, second)
            )
        for _ in range(int(30 * wave * random.random())):
            app.stats.observe(
                Event("hit", "search", "token_bucket", "memory", "q", "shadow_denied", decision,
                      second)
            )  # fmt: skip
    api, login = registry.get_limiter("api"), registry.get_limiter("login")
    for user in range(40):
        for _ in range(random.randrange(1, 6)):
            api.hit(f"user:{user}")
    for _ in range(140):
        api.hit("user:7")
    for attempt in range(30):
        login.hit("203.0.113.9" if attempt % 3 else "198.51.100.4")
    for _ in range(140):
        api.hit("<script>alert(1)</script>")
    try:
        with served(app) as base:
            browser = Browser()
            try:
                browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                             deviceScaleFactor=1, mobile=False)  # fmt: skip
                browser.call("Network.enable")
                browser.call("Network.setExtraHTTPHeaders", headers=BASIC)
                browser.call("Page.enable")
                browser.call("Page.navigate", url=f"{base}/")
                browser.wait_for("document.body && Number(document.body.dataset.updates) >= 1")
                browser.evaluate(
                    "document.getElementById('key-limiter').value = 'api';"
                    "document.getElementById('key-input').value = 'user:7';"
                    "document.getElementById('lookup').click()"
                )
                time.sleep(SETTLE)
                target.write_bytes(browser.screenshot())
            finally:
                browser.close()
    finally:
        app.close()
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
