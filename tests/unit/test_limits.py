import time

import pytest

from ratekeeper import ConfigError, Limit, parse_limits
from ratekeeper.limits import MAX_AMOUNT, MAX_PERIOD, MAX_RATE_STRING, MIN_PERIOD


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/minute", [Limit(100, per=60)]),
        ("100 per minute", [Limit(100, per=60)]),
        ("10/5s", [Limit(10, per=5)]),
        ("10 per 5 minutes", [Limit(10, per=300)]),
        ("10/second;1000/hour", [Limit(10, per=1), Limit(1000, per=3600)]),
        ("1000/hour ; 10/second", [Limit(1000, per=3600), Limit(10, per=1)]),
        ("5/SECONDS", [Limit(5, per=1)]),
        ("5/Minutes", [Limit(5, per=60)]),
        ("1/d", [Limit(1, per=86400)]),
        ("7/h", [Limit(7, per=3600)]),
        ("7/2h", [Limit(7, per=7200)]),
        ("3/m", [Limit(3, per=60)]),
        ("2 per 2 days", [Limit(2, per=172800)]),
        ("4/1.5s", [Limit(4, per=1.5)]),
    ],
)
def test_grammar(text, expected):
    assert parse_limits(text) == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "empty"),
        ("100", "'100'"),
        ("100/fortnight", "fortnight"),
        ("abc/minute", "abc/minute"),
        ("-5/minute", "-5/minute"),
        ("0/minute", "0/minute"),
        ("10/0s", "10/0s"),
        ("10/minute;;5/second", "''"),
        ("10/minute;oops", "oops"),
        ("10 per", "10 per"),
    ],
)
def test_bad_text_names_the_part(text, named):
    with pytest.raises(ConfigError) as info:
        parse_limits(text)
    assert named in str(info.value)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_limits("nonsense")


def test_non_string_rejected():
    with pytest.raises(ConfigError, match="rate string"):
        parse_limits(100)  # type: ignore[arg-type]


def test_limit_value_object():
    a = Limit(100, per=60, burst=150)
    assert a == Limit(100, per=60.0, burst=150)
    assert a != Limit(100, per=60)
    assert hash(a) == hash(Limit(100, per=60, burst=150))
    assert (a.amount, a.per, a.burst, a.capacity) == (100, 60.0, 150, 150)
    assert Limit(100, per=60).capacity == 100
    assert a.rate == pytest.approx(100 / 60)
    assert a.interval == pytest.approx(0.6)
    with pytest.raises(AttributeError):
        a.amount = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amount": 0},
        {"amount": -1},
        {"amount": 1.5},
        {"amount": True},
        {"amount": 1, "per": 0},
        {"amount": 1, "per": -3},
        {"amount": 1, "per": float("inf")},
        {"amount": 1, "per": "60"},
        {"amount": 1, "burst": 0},
        {"amount": 1, "burst": -2},
    ],
)
def test_bad_limit_objects(kwargs):
    with pytest.raises(ConfigError) as info:
        Limit(**kwargs)
    assert repr(next(reversed(kwargs.values()))) in str(info.value)


def test_names():
    assert Limit(100, per=60).name == "100-per-60s"
    assert Limit(3, per=1.5).name == "3-per-1.5s"
    assert Limit(10, per=1, burst=20).name == "10-per-1s-burst-20"
    assert str(Limit(100, per=60)) == "100/60s"


# --------------------------------------------------------------------------- hostile text


@pytest.mark.parametrize(
    "text",
    [
        "1 per" + " " * 800 + "!",  # took 9 s with the old grammar
        "1/" + " " * 10000,  # 5 s
        "1/" + " " * 990 + "x",
        "1" + " " * 995 + "per",
        "9" * 990 + "/s",
        "10/second;" * 100,
    ],
)
def test_hostile_text_is_refused_fast(text):
    """Rate strings can come from request-time code: parsing is linear and bounded."""
    started = time.perf_counter()
    with pytest.raises(ConfigError):
        parse_limits(text)
    assert time.perf_counter() - started < 0.5


def test_over_long_text_is_refused_saying_why():
    with pytest.raises(ConfigError, match=f"at most {MAX_RATE_STRING}"):
        parse_limits("1/" + " " * MAX_RATE_STRING)
    assert parse_limits("1/" + " " * (MAX_RATE_STRING - 3) + "s") == [Limit(1, per=1)]


@pytest.mark.parametrize(
    "text",
    ["9" * 400 + "/second", "9" * 5000 + "/second", "9007199254740993/second", "9" * 17 + "/day"],
)
def test_huge_amounts_are_config_errors(text):
    with pytest.raises(ConfigError) as info:
        parse_limits(text)
    assert "999" in str(info.value) or "9007199254740993" in str(info.value)


@pytest.mark.parametrize(
    "text", ["\u0661\u0660/second", "\uff11\uff10/second", "10/\uff11s", "10/second\u3000"]
)
def test_only_ascii_digits_and_spaces(text):
    with pytest.raises(ConfigError):
        parse_limits(text)


@pytest.mark.parametrize("text", ["10/ms", "10/5ms", "10 per 5 ms", "10/msec", "3/us"])
def test_sub_second_units_are_refused_never_misread(text):
    """ "ms" once lost its s as a plural and read as minutes."""
    with pytest.raises(ConfigError, match="unknown time unit") as info:
        parse_limits(text)
    assert "decimal seconds" in str(info.value)


@pytest.mark.parametrize(
    ("text", "per"),
    [("1/secs", 1), ("1/mins", 60), ("1/hrs", 3600), ("1/days", 86400), ("1/0.5s", 0.5)],
)
def test_every_unit_spelling(text, per):
    assert parse_limits(text) == [Limit(1, per=per)]


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"amount": 2**53 + 1}, r"2\*\*53"),
        ({"amount": 10**400}, r"2\*\*53"),
        ({"amount": 1, "burst": 10**30}, r"2\*\*53"),
        ({"amount": 1, "per": 1e300}, "period"),
        ({"amount": 1, "per": 10**400}, "period"),
        ({"amount": 1, "per": MAX_PERIOD * 1.000001}, "period"),
        ({"amount": 1, "per": 0.0009}, "period"),
        ({"amount": 10, "per": 0.00001}, "period"),
        ({"amount": 1, "per": 86400, "burst": 10**6}, "refill"),
    ],
)
def test_limits_no_store_can_hold_fail_at_construction(kwargs, named):
    with pytest.raises(ConfigError, match=named):
        Limit(**kwargs)


def test_parsed_limits_out_of_range_name_the_part():
    with pytest.raises(ConfigError, match=r"'1/1000000000000 days'.*period"):
        parse_limits("10/second; 1/1000000000000 days")


def test_the_largest_limits_are_accepted():
    assert Limit(MAX_AMOUNT, per=MAX_PERIOD, burst=MAX_AMOUNT).capacity == 2**53
    assert Limit(MAX_AMOUNT, per=MIN_PERIOD).rate == 2**53 * 1000
    assert Limit(1, per=MAX_PERIOD).per == MAX_PERIOD
    assert Limit(1, per=MIN_PERIOD).rate == 1000
    assert Limit(1, per=1, burst=int(MAX_PERIOD)).capacity == MAX_PERIOD
