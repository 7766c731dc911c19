"""Another process using the same shared store: ``python rules_worker.py URL NAME``.

It names the store ``shared`` (the admin process calls it ``main``), keeps its registry in step
with `sync_rules`, and prints the settings of limiter NAME (JSON, ``null`` when undefined) at
start and each time they change, checking every few milliseconds.
"""

from __future__ import annotations

import json
import sys
import time

from ratekeeper import Registry
from ratekeeper.admin import sync_rules

CHECK_EVERY = 0.02  # seconds between two looks at the registry (not rate logic)


def main() -> None:
    url, name = sys.argv[1], sys.argv[2]
    registry = Registry(discover=False)
    registry.configure_store("shared", url)
    sync_rules(registry)
    shown: object = ...
    while True:
        settings = registry.list_limiters().get(name)
        if settings != shown:
            shown = settings
            print(json.dumps(settings), flush=True)
        time.sleep(CHECK_EVERY)


if __name__ == "__main__":
    main()
