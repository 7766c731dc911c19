"""IoT ingestion: one limit per device, many devices, on the in-process memory store.

Try it:   python examples/iot_ingestion.py [--devices 1000000]   (nothing to install)

Each device may send ``DEVICE_RATE`` readings (here 60 a minute, bursts of 60). The example
ingests one reading from each of ``--devices`` devices, then a misbehaving device floods, and
prints how many readings were admitted, the memory the store holds per device key (measured
with tracemalloc), and what is left once the devices have been quiet for a minute: the memory
store drops a fully replenished state during later activity, with no background thread.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from dataclasses import dataclass

from ratekeeper import RateLimiter
from ratekeeper.stores.memory import MemoryStore
from ratekeeper.testing import FakeClock

DEVICE_RATE = "60/minute"
FLOOD = 100  # readings the misbehaving device sends at once


@dataclass
class Report:
    devices: int
    admitted: int
    flood_admitted: int
    bytes_per_key: float
    bytes_after_quiet: int


def ingest(devices: int) -> Report:
    clock = FakeClock()  # the readings arrive "at once"; in production leave clock= out
    store = MemoryStore()
    limiter = RateLimiter(DEVICE_RATE, store=store, clock=clock)
    limiter.hit("device:warmup")  # the store's own structures, not counted per key
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    admitted = sum(limiter.hit(f"device:{n:08d}").allowed for n in range(devices))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    flood_admitted = sum(limiter.hit("device:00000000").allowed for _ in range(FLOOD))
    clock.advance(60)  # a quiet minute: every device's bucket is full again
    limiter.hit("device:new")  # later activity frees the replenished states
    gc.collect()
    after_quiet = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return Report(devices, admitted, flood_admitted, held / devices, after_quiet)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200_000)
    report = ingest(parser.parse_args(argv).devices)
    print(f"devices:                {report.devices:,}")
    print(f"readings admitted:      {report.admitted:,}")
    print(f"flood of {FLOOD} admitted: {report.flood_admitted} (60 a minute, one already sent)")
    print(f"memory per device key:  {report.bytes_per_key:.0f} bytes")
    print(f"after a quiet minute:   {report.bytes_after_quiet:,} bytes held")
    return report


if __name__ == "__main__":
    main()
