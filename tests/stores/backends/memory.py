from ratekeeper.stores.memory import AsyncMemoryStore, MemoryStore

from . import Backend

BACKENDS = [
    Backend(
        "memory",
        make_sync=MemoryStore,
        make_async=AsyncMemoryStore,
        shared_between_processes=False,
        applies_checks=True,
    )
]
