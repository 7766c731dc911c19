"""AuditLog: JSON lines for denials, shadow denials and store errors, to a file, a stream or a
logger."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from ratekeeper import RateLimiter
from ratekeeper.observability import AuditLog
from ratekeeper.testing import FakeClock
from tests.observability.events import decision, event, standard_events

THREADS = 8
EXPECTED = [
    {"time": "2023-11-14T22:13:20.250000+00:00", "limiter": "api", "key": "user:secret-42",
     "result": "denied", "limit": 10, "remaining": 0, "retry_after": 6.0},
    {"time": "2023-11-14T22:13:20.250000+00:00", "limiter": "api", "key": "user:secret-42",
     "result": "denied", "limit": 10, "remaining": 0, "retry_after": 6.0},
    {"time": "2023-11-14T22:13:20.250000+00:00", "limiter": "api", "key": "user:secret-42",
     "result": "shadow_denied", "limit": 10, "remaining": 5, "retry_after": 0.0},
    {"time": "2023-11-14T22:13:20.250000+00:00", "limiter": "api", "key": "user:secret-42",
     "result": "StoreUnavailable", "limit": None, "remaining": None, "retry_after": None},
]  # fmt: skip


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_path_gets_one_json_line_per_denial_shadow_denial_and_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        for e in standard_events():
            log.observe(e)
    assert lines(path.read_text()) == EXPECTED
    with AuditLog(str(path)) as log:  # a str path appends
        log.observe(event(result="denied"))
    assert len(path.read_text().splitlines()) == 5


def test_a_text_stream() -> None:
    stream = io.StringIO()
    log = AuditLog(stream)
    for e in standard_events():
        log.observe(e)
    assert lines(stream.getvalue()) == EXPECTED


def test_a_logger_gets_one_record_per_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.audit")
    log = AuditLog(logger)
    with caplog.at_level(logging.INFO, logger="tests.audit"):
        for e in standard_events():
            log.observe(e)
    assert [r.name for r in caplog.records] == ["tests.audit"] * 4
    assert [r.levelno for r in caplog.records] == [logging.INFO] * 4
    assert [json.loads(r.getMessage()) for r in caplog.records] == EXPECTED


def test_allowed_decisions_and_other_events_are_never_written() -> None:
    stream = io.StringIO()
    log = AuditLog(stream)
    log.observe(event())
    log.observe(event(decision=decision(remaining=0)))
    log.observe(event(kind="timeout", result="denied"))  # its hits were written already
    log.observe(event(kind="release", decision=None))
    assert stream.getvalue() == ""


def test_a_candidate_limit_denial_is_a_shadow_denial() -> None:
    stream = io.StringIO()
    AuditLog(stream).observe(event(result="allowed", shadow_denied=True))
    assert lines(stream.getvalue())[0]["result"] == "shadow_denied"


def test_a_cost_that_can_never_pass_has_a_null_retry_after() -> None:
    stream = io.StringIO()
    AuditLog(stream).observe(
        event(result="denied", decision=decision(False, 0, retry_after=float("inf")))
    )
    assert '"retry_after": null' in stream.getvalue()
    assert lines(stream.getvalue())[0]["retry_after"] is None


def test_hash_keys_writes_an_hmac_sha256_digest_instead_of_the_key() -> None:
    stream = io.StringIO()
    log = AuditLog(stream, hash_keys=True, secret=b"s3cret")
    log.observe(event(result="denied"))
    [entry] = lines(stream.getvalue())
    assert "key" not in entry and "secret-42" not in stream.getvalue()
    expected = hmac.new(b"s3cret", b"user:secret-42", hashlib.sha256).hexdigest()
    assert entry["key_digest"] == expected == log.digest("user:secret-42")
    assert list(entry) == [
        "time", "limiter", "key_digest", "result", "limit", "remaining", "retry_after"
    ]  # fmt: skip


def test_without_a_secret_digests_are_stable_in_the_process_and_keyed() -> None:
    first, second = AuditLog(io.StringIO(), hash_keys=True), AuditLog(io.StringIO(), hash_keys=True)
    assert first.digest("user:1") == second.digest("user:1") != first.digest("user:2")
    # keyed: not the plain SHA-256 anyone could compute from a guessed key
    assert first.digest("user:1") != hashlib.sha256(b"user:1").hexdigest()
    assert AuditLog(io.StringIO(), secret="a").digest("k") != first.digest("k")


def test_events_after_close_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.close()
    log.observe(event(result="denied"))  # raises nothing
    assert path.read_text() == ""


def test_through_a_limiter_8_threads_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, hash_keys=True) as log:
        limiter = RateLimiter("100/minute", name="api", clock=FakeClock(), observers=[log])
        shadow = RateLimiter(
            "100/minute", name="trial", clock=FakeClock(), shadow=True, observers=[log]
        )
        barrier = threading.Barrier(THREADS)

        def work() -> None:
            barrier.wait()
            for _ in range(50):
                limiter.hit("user:hot")
                shadow.hit("user:hot")

        threads = [threading.Thread(target=work) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    entries = lines(path.read_text())  # every line parses: none interleaved
    written = {(e["limiter"], e["result"]): 0 for e in entries}
    for e in entries:
        written[e["limiter"], e["result"]] += 1
    assert written == {("api", "denied"): 300, ("trial", "shadow_denied"): 300}
    assert {e["key_digest"] for e in entries} == {log.digest("user:hot")}
    assert limiter.metrics().denied == 300 and shadow.metrics().shadow_denied == 300
