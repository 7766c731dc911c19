"""A webhook processor: deliveries queue per customer, each waits for its customer's limit.

Try it:   python examples/webhook_processor.py        (nothing to install beyond ratekeeper)

Every customer's endpoint accepts at most ``RATE`` deliveries (here 5 a second, a burst of 5):
a worker per customer takes deliveries from that customer's queue and ``acquire``s a slot before
each one, so a customer with a backlog of 30 events waits on its own budget while the others'
events flow at once. Nothing is dropped and nobody polls: ``acquire`` sleeps exactly until the
next slot. The output shows, per customer, how many events went out and over how long.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ratekeeper import AsyncRateLimiter

RATE = "5/second"  # per customer endpoint

Deliver = Callable[[str, dict[str, object]], Awaitable[None]]


@dataclass
class WebhookProcessor:
    """Queues per customer; one worker each, pacing deliveries with ``limiter.acquire``."""

    deliver: Deliver
    limiter: AsyncRateLimiter = field(default_factory=lambda: AsyncRateLimiter(RATE))
    queues: dict[str, asyncio.Queue[dict[str, object]]] = field(default_factory=dict)
    workers: list[asyncio.Task[None]] = field(default_factory=list)

    def submit(self, customer: str, event: dict[str, object]) -> None:
        if customer not in self.queues:
            self.queues[customer] = asyncio.Queue()
            self.workers.append(asyncio.create_task(self._work(customer)))
        self.queues[customer].put_nowait(event)

    async def _work(self, customer: str) -> None:
        queue = self.queues[customer]
        while True:
            event = await queue.get()
            try:
                await self.limiter.acquire(f"webhook:{customer}")  # waits for this customer's slot
                await self.deliver(customer, event)
            finally:
                queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued event is delivered, then stop the workers."""
        await asyncio.gather(*(queue.join() for queue in self.queues.values()))
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)


async def main(rate: str = RATE) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent: dict[str, list[float]] = defaultdict(list)

    async def deliver(customer: str, event: dict[str, object]) -> None:
        sent[customer].append(loop.time() - start)  # a real processor POSTs the event here

    processor = WebhookProcessor(deliver, limiter=AsyncRateLimiter(rate))
    for n in range(30):
        processor.submit("acme", {"id": n, "type": "invoice.paid"})  # a backlog
    for customer in ("globex", "initech"):
        for n in range(3):
            processor.submit(customer, {"id": n, "type": "user.created"})
    await processor.drain()
    for customer, times in sent.items():
        print(f"{customer:8} {len(times):3} events in {times[-1]:.2f} s")
    return sent


if __name__ == "__main__":
    asyncio.run(main())
