import pytest

from spotrun.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    "text,seconds",
    [("30", 30), ("90s", 90), ("2m", 120), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400), (7, 7)],
)
def test_parse(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "1h30", "-5s", "-3"])
def test_parse_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_round_trips_scale():
    assert format_duration(0.25) == "250ms"
    assert format_duration(12.34) == "12.3s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3 * 3600 + 61) == "3h01m"
