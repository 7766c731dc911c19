"""``ratekeeper simulate``: CSV and access logs replayed through each algorithm on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratekeeper.cli import main
from ratekeeper.errors import ConfigError
from ratekeeper.simulate import read_requests, report, simulate

EXAMPLE_LOG = Path(__file__).resolve().parents[2] / "examples" / "access.log"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_csv_with_header_iso_and_unix_times_and_costs(tmp_path: Path) -> None:
    log = tmp_path / "traffic.csv"
    log.write_text(
        "timestamp,key,cost\n"
        "1700000000,a\n"
        "2023-11-14T22:13:20Z,a,1\n"  # the same instant
        "1700000000.5,a\n"
        "1700000000.5,b,5\n"
        "1700000001,a,\n"
    )
    requests, kind = read_requests(log)
    assert kind == "CSV" and [r.key for r in requests] == ["a", "a", "a", "b", "a"]
    result = simulate(requests, "2/second", ["fixed_window", "token_bucket"])
    fixed, bucket = result.results
    # fixed window: a, a pass, the third a in the same second is denied, b's cost 5 > 2 is
    # denied, and the next second's a passes
    assert (fixed.admitted, fixed.denied, dict(fixed.limited)) == (3, 2, {"a": 1, "b": 1})
    # token bucket: half a second refills one token: the third a passes; at 1.0 s one more
    assert (bucket.admitted, bucket.denied) == (4, 1)
    assert result.requests == 5 and result.keys == 2 and result.span == 1.0
    assert sum(result.offered_series) == 5 and sum(fixed.admitted_series) == 3


def test_access_log_keys(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(
        '10.0.0.1 - alice [10/Oct/2023:13:55:36 -0700] "GET /a?x=1 HTTP/1.1" 200 12\n'
        '10.0.0.2 - bob [10/Oct/2023:13:55:37 -0700] "POST /a HTTP/1.1" 201 7 "-" "curl"\n'
    )
    assert [r.key for r in read_requests(log)[0]] == ["10.0.0.1", "10.0.0.2"]
    assert [r.key for r in read_requests(log, "user")[0]] == ["alice", "bob"]
    assert [r.key for r in read_requests(log, "path")[0]] == ["/a", "/a"]
    requests, kind = read_requests(log)
    assert kind == "access log" and requests[1].time - requests[0].time == 1


def test_bad_input(tmp_path: Path) -> None:
    log = tmp_path / "bad.csv"
    log.write_text("1700000000,a\nyesterday,b\n")
    with pytest.raises(ConfigError, match="row 2"):
        read_requests(log)
    with pytest.raises(ConfigError, match="key must be"):
        read_requests(log, "agent")
    with pytest.raises(ConfigError, match="unknown algorithm"):
        simulate([], "1/second", ["fastest"])
    assert "0 requests" in report(simulate([], "1/second"))


def test_cli_on_the_example_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = tmp_path / "chart.png"
    assert (
        main(["simulate", "--limits", "100/minute", str(EXAMPLE_LOG), "--chart", str(chart)]) == 0
    )
    out = capsys.readouterr().out
    assert "replayed 2071 requests from 22 keys over 599 s" in out
    for line in (
        "token_bucket          1989        82      4.0%             2",
        "fixed_window          1831       240     11.6%             2",
        "gcra           198.51.100.7 (62), 192.0.2.55 (20)",  # the scraper and the batch job
    ):
        assert line in out, out
    assert "203.0.113." not in out  # no ordinary client would have been limited
    assert chart.read_bytes().startswith(PNG_MAGIC)


def test_cli_one_algorithm_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--limits", "100/minute", "--algorithm", "gcra", str(EXAMPLE_LOG)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gcra" in out and "token_bucket" not in out
    assert main(["simulate", "--limits", "100/fortnight", str(EXAMPLE_LOG)]) == 1
    assert "fortnight" in capsys.readouterr().err
    assert main(["simulate", "--limits", "1/s", str(tmp_path / "missing.log")]) == 1
    assert "missing.log" in capsys.readouterr().err
