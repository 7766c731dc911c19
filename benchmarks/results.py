"""What a benchmark run produces and how it is read: section titles and units, the run settings,
and one `Row` per measured case. `run.py` fills rows; `report.py` writes them out. Neither imports
the other."""

from __future__ import annotations

from dataclasses import dataclass, field

# Section titles, in report order. The unit says how to read (and compare) the numbers.
MEM_ONE = "Memory, sync, 1 key"
MEM_MANY = "Memory, sync, 10,000 keys"
THR_ONE = "Memory, 8 threads, 1 key"
THR_MANY = "Memory, 8 threads, 10,000 keys"
MEM_KEY = "Memory per key (100,000 keys)"
RED_ONE = "Redis, sync, 1 key"
RED_MANY = "Redis, sync, 10,000 keys"
RED_ASYNC = "Redis, asyncio, 50 tasks, 10,000 keys"
CACHE = "Redis, hot abusive key (over-limit local cache)"
HOTKEY = "Redis, hot key (leased local quota)"
WEB = "Web middleware overhead, in-process (one default limit, headers on)"
WEB_WRK = "Web middleware overhead, uvicorn + wrk (Starlette)"
SCALE_BYTES = "Memory store at scale: bytes per key"
SCALE_HIT = "Memory store at scale: hit time"
CLUSTER = "Redis Cluster scale-out, asyncio, 200 tasks per process, 10,000 keys"
SECTIONS = (
    MEM_ONE,
    MEM_MANY,
    THR_ONE,
    THR_MANY,
    MEM_KEY,
    RED_ONE,
    RED_MANY,
    RED_ASYNC,
    CACHE,
    HOTKEY,
    WEB,
)
# Run only when asked (``--wrk``, ``--scale``, ``--cluster``): minutes each, never in the smoke run.
OPTIONAL_SECTIONS = (WEB_WRK, SCALE_BYTES, SCALE_HIT, CLUSTER)
UNITS = {
    MEM_ONE: "ns",
    MEM_MANY: "ns",
    THR_ONE: "dec/s",
    THR_MANY: "dec/s",
    MEM_KEY: "B/key",
    RED_ONE: "ns",
    RED_MANY: "ns",
    RED_ASYNC: "dec/s",
    CACHE: "dec/s",
    HOTKEY: "dec/s",
    WEB: "ns",
    WEB_WRK: "ns",
    SCALE_BYTES: "B/key",
    SCALE_HIT: "ns",
    CLUSTER: "dec/s",
}
HIGHER_IS_BETTER = {"dec/s"}


@dataclass(frozen=True)
class Settings:
    mem_n: int  # decisions per sample, memory cases
    threads_n: int
    redis_n: int
    async_n: int
    cache_n: int
    keys_for_memory: int
    repeats: int
    warmup: int  # decisions before the first sample
    web_n: int  # requests per web sample


FULL = Settings(
    mem_n=2_500,
    threads_n=8_000,
    redis_n=600,
    async_n=2_000,
    cache_n=2_000,
    keys_for_memory=100_000,
    repeats=11,
    warmup=1_000,
    web_n=2_000,
)
SMOKE = Settings(
    mem_n=200,
    threads_n=400,
    redis_n=40,
    async_n=200,
    cache_n=100,
    keys_for_memory=500,
    repeats=2,
    warmup=20,
    web_n=30,
)


@dataclass
class Row:
    section: str
    family: str
    library: str
    algorithm: str
    value: float  # median
    spread: float  # (max - min) / median
    unit: str
    samples: list[float] = field(default_factory=list)  # one per repeat, in repeat order


def log(text: str) -> None:
    print(text, flush=True)


def fmt(value: float, unit: str) -> str:
    if unit == "ns":
        return f"{value / 1000:,.2f} µs" if value >= 10_000 else f"{value:,.0f} ns"
    if unit == "dec/s":
        return f"{value:,.0f}/s"
    return f"{value:,.0f} B"
