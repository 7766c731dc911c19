"""An OpenAI-style client limited to N tokens and M requests per minute, by reservation.

Try it:   python examples/llm_client.py          (a stand-in model: no network, no API key)

A model API meters tokens, and the tokens of a call are known only from its response. So each
call reserves its estimate first (the prompt's tokens plus ``max_tokens``) on a chain of two
limiters sharing one store: one request on the requests level, the estimate on the tokens level,
all-or-nothing. A call that does not fit waits (``retry_after``) instead of being sent to fail
with HTTP 429. When the response arrives, the reservation is committed with the usage the API
reports: the unused part of the estimate goes back to the budget at once, and a call that used
more than estimated is charged the extra (the budget goes into debt that later calls wait off).
With ``stream=True`` the tokens are charged as they arrive (``r.charge``) and the reservation is
settled when the stream ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ratekeeper import Chain, RateLimiter, RateLimitExceeded, Reservation
from ratekeeper.stores.memory import MemoryStore

TOKENS_PER_MINUTE = 10_000
REQUESTS_PER_MINUTE = 20


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    text: str
    usage: Usage


class StandInModel:
    """Answers like a chat completions API: a completion of about half of ``max_tokens``."""

    def create(self, prompt: str, max_tokens: int) -> Completion:
        words = ["token"] * (max_tokens // 2)
        return Completion(" ".join(words), Usage(count_tokens(prompt), len(words)))

    def stream(self, prompt: str, max_tokens: int) -> Iterator[str]:
        for _ in range(max_tokens // 2):
            yield "token"


def count_tokens(text: str) -> int:
    """A rough estimate (about four characters per token), as clients do before sending."""
    return max(1, len(text) // 4)


class LimitedClient:
    """The model behind a requests-and-tokens budget shared by everything using ``store``."""

    def __init__(
        self,
        model: StandInModel,
        *,
        store: MemoryStore | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        store = store or MemoryStore()
        self.model = model
        self.sleep = sleep
        requests = RateLimiter(f"{REQUESTS_PER_MINUTE}/minute", store=store, clock=clock)
        tokens = RateLimiter(f"{TOKENS_PER_MINUTE}/minute", store=store, clock=clock)
        self.budget = Chain(requests, tokens)

    def _reserve(self, account: str, estimate: int) -> Reservation:
        while True:
            reservation = self.budget.reserve(account, cost=[1, estimate])
            if reservation:
                return reservation
            if reservation.decision.retry_after == float("inf"):
                raise RateLimitExceeded(reservation.decision)  # larger than a whole minute
            self.sleep(reservation.decision.retry_after)

    def complete(self, account: str, prompt: str, max_tokens: int = 256) -> Completion:
        estimate = count_tokens(prompt) + max_tokens
        reservation = self._reserve(account, estimate)
        try:
            completion = self.model.create(prompt, max_tokens)
        except BaseException:
            reservation.cancel()  # nothing was used
            raise
        reservation.commit([1, completion.usage.total_tokens])
        return completion

    def stream(self, account: str, prompt: str, max_tokens: int = 256) -> Iterator[str]:
        reservation = self._reserve(account, count_tokens(prompt) + max_tokens)
        with reservation:  # settles at what was charged
            reservation.charge([1, count_tokens(prompt)])
            for chunk in self.model.stream(prompt, max_tokens):
                reservation.charge([0, 1])
                yield chunk


def main() -> None:
    client = LimitedClient(StandInModel())
    prompt = "Summarize the rate limiting policies of this library. " * 4
    for i in range(3):
        completion = client.complete("team-a", prompt, max_tokens=1000)
        left = client.budget.peek("team-a", cost=0).details
        print(
            f"call {i}: reserved {count_tokens(prompt) + 1000} tokens, used "
            f"{completion.usage.total_tokens}; left this minute: {left[0].remaining} requests, "
            f"{left[1].remaining} tokens"
        )
    streamed = sum(1 for _ in client.stream("team-a", prompt, max_tokens=400))
    left = client.budget.peek("team-a", cost=0).details
    print(f"streamed {streamed} tokens; left: {left[0].remaining} requests, {left[1].remaining}")


if __name__ == "__main__":
    main()
