"""examples/llm_client.py: reservations by estimate, settled with the usage of the response."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from ratekeeper.testing import FakeClock

from .test_examples import EXAMPLES, load


@pytest.fixture
def example():  # type: ignore[no-untyped-def]
    return load("llm_client")


def test_the_unused_estimate_goes_back_at_once(example) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    client = example.LimitedClient(example.StandInModel(), clock=clock, sleep=clock.advance)
    prompt = "x" * 400  # 100 tokens
    completion = client.complete("a", prompt, max_tokens=1000)  # reserves 1100, uses 600
    assert completion.usage.total_tokens == 600
    requests, tokens = client.budget.peek("a", cost=0).details
    assert (requests.remaining, tokens.remaining) == (example.REQUESTS_PER_MINUTE - 1, 9400)


def test_calls_wait_instead_of_exceeding_the_budget(example) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    client = example.LimitedClient(example.StandInModel(), clock=clock, sleep=clock.advance)
    for _ in range(30):  # 30 requests: 20 fit the first minute, the rest wait their turn
        client.complete("a", "hello", max_tokens=100)
    assert clock() - FakeClock()() == pytest.approx(30, abs=0.1)  # 10 more at 3 s each


def test_a_call_that_used_more_than_estimated_leaves_a_debt(example) -> None:  # type: ignore[no-untyped-def]
    class Verbose(example.StandInModel):  # type: ignore[misc,name-defined]
        def create(self, prompt: str, max_tokens: int):  # type: ignore[no-untyped-def]
            return example.Completion("...", example.Usage(1, 15_000))  # past the estimate

    clock = FakeClock()
    client = example.LimitedClient(Verbose(), clock=clock, sleep=clock.advance)
    client.complete("a", "hi", max_tokens=100)  # charged in full: 5 001 tokens of debt
    start = clock()
    client.complete("a", "hi", max_tokens=100)  # waits until 101 tokens are back
    assert clock() - start == pytest.approx((5_001 + 101) * 60 / 10_000, rel=1e-6)


def test_streaming_charges_as_tokens_arrive(example) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    client = example.LimitedClient(example.StandInModel(), clock=clock, sleep=clock.advance)
    chunks: Iterator[str] = client.stream("a", "x" * 40, max_tokens=400)  # reserves 410
    for _ in range(150):
        next(chunks)
    assert client.budget.peek("a", cost=0).details[1].remaining == 10_000 - 410  # within it
    assert sum(1 for _ in chunks) == 50
    assert client.budget.peek("a", cost=0).details[1].remaining == 10_000 - 210  # settled


def test_the_script_runs_as_its_try_it_line_says() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "llm_client.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "call 2: reserved 1054 tokens, used 554" in done.stdout
