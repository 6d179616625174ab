"""The local market's decisions, computed at launch: lifetimes, trace availability, lead times."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from spotrun.providers.local import MarketConfig

def trace_file(tmp_path: Path, data: list[int], gap: int = 600) -> Path:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": gap}, "data": data}))
    return path


def test_lead_time_is_the_imitated_clouds_unless_configured() -> None:
    assert MarketConfig(cloud="aws").notice_lead_s == 120
    assert MarketConfig(cloud="gcp").notice_lead_s == 30
    assert MarketConfig(cloud="azure").notice_lead_s == 30
    assert MarketConfig(cloud="aws", lead_s=3).notice_lead_s == 3


def test_seeded_lifetimes_are_reproducible_per_token_and_exponential() -> None:
    market = MarketConfig(mean_lifetime_s=100, seed=42)
    lifetimes = [market.notice_at(f"tok-{i}", "z", now=0.0, epoch=0.0) for i in range(4000)]
    again = MarketConfig(mean_lifetime_s=100, seed=42).notice_at("tok-17", "z", now=0.0, epoch=0.0)
    assert again == lifetimes[17]
    assert MarketConfig(mean_lifetime_s=100, seed=43).notice_at("tok-17", "z", 0.0, 0.0) != again
    assert 90 < statistics.fmean(lifetimes) < 110  # exponential: the mean ...
    assert 60 < statistics.median(lifetimes) < 80  # ... and the median, 100 ln 2 = 69


def test_no_rate_and_no_trace_means_never_reclaimed() -> None:
    assert MarketConfig().notice_at("t", "z", now=5.0, epoch=0.0) is None


def test_trace_availability_follows_scaled_ticks_and_loops(tmp_path: Path) -> None:
    market = MarketConfig(trace=trace_file(tmp_path, [1, 1, 0, 1]), time_scale=1 / 600)
    assert [market.available("any", now=t + 0.5, epoch=0.0) for t in range(6)] == [
        True, True, False, True, True, True,
    ]  # fmt: skip
    # launched in tick 0: the notice comes when tick 2 begins; in tick 3: at tick 6 (loop)
    assert market.notice_at("t", "any", now=0.5, epoch=0.0) == pytest.approx(2.0)
    assert market.notice_at("t", "any", now=3.5, epoch=0.0) == pytest.approx(6.0)


def test_rate_and_trace_combine_to_the_earlier_reclaim(tmp_path: Path) -> None:
    trace = trace_file(tmp_path, [1] * 9 + [0], gap=1)
    both = MarketConfig(trace=trace, mean_lifetime_s=1000, seed=1)
    rate_only = MarketConfig(mean_lifetime_s=1000, seed=1)
    times = [(both.notice_at(f"t{i}", "z", 0.0, 0.0), rate_only.notice_at(f"t{i}", "z", 0.0, 0.0)) for i in range(50)]
    assert all(b == min(r, 9.0) for b, r in times)  # type: ignore[type-var]


def test_zones_have_their_own_traces(tmp_path: Path) -> None:
    up, down = tmp_path / "up.json", tmp_path / "down.json"
    up.write_text(json.dumps({"metadata": {"gap_seconds": 60}, "data": [1]}))
    down.write_text(json.dumps({"metadata": {"gap_seconds": 60}, "data": [0]}))
    market = MarketConfig(trace={"us-west-2a": up, "us-west-2b": down})
    assert market.default_zone() == "us-west-2a"
    assert market.available("us-west-2a", 10.0, 0.0) and not market.available("us-west-2b", 10.0, 0.0)
    assert market.notice_at("t", "us-west-2a", 10.0, 0.0) is None
    assert market.available("a-zone-with-no-trace", 10.0, 0.0)


def test_the_trace_epoch_is_fixed_once_per_root(tmp_path: Path) -> None:
    market = MarketConfig()
    first = market.epoch(tmp_path)
    assert MarketConfig().epoch(tmp_path) == first
    assert MarketConfig(trace_epoch=5.0).epoch(tmp_path) == 5.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cloud": "oracle"}, "unknown cloud"),
        ({"lead_s": -1}, "lead_s"),
        ({"mean_lifetime_s": 0}, "mean_lifetime_s"),
        ({"time_scale": 0}, "time_scale"),
        ({"trace": "/nonexistent/trace.json"}, "no trace"),
    ],
)
def test_bad_configuration_says_what_to_fix(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MarketConfig(**fields)
