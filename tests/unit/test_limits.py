import pytest

from ratekeeper import ConfigError, Limit, parse_limits


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
