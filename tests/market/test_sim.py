"""Simulator accounting on hand-built traces: every number here is checkable by hand."""

import pytest

from spotrun.market.policies import ONLINE, make
from spotrun.market.policy import IDLE, ON_DEMAND, JobSpec, spot
from spotrun.market.sim import Market, exact_grid, simulate
from tests.market.helpers import Script, market, random_market

OD, SPOT = 3.06, 0.918
TEN_MIN = 600.0


def job(compute_s=1800.0, deadline_s=7200.0, changeover_s=TEN_MIN) -> JobSpec:
    return JobSpec(compute_s, deadline_s, changeover_s)


def test_on_demand_pays_compute_plus_one_changeover():
    r = simulate(make("on-demand"), job(), market([0] * 20))
    assert r.on_demand_s == 2400 and r.spot_s == 0
    assert r.cost == pytest.approx(2400 * OD / 3600)
    assert r.on_demand_hours == pytest.approx(0.5)
    assert r.changeovers == 1 and r.preemptions == 0
    assert r.finish_s == 2400 and r.met_deadline


def test_spot_all_the_way():
    r = simulate(make("greedy"), job(), market([1] * 20))
    assert r.spot_s == 2400 and r.on_demand_s == 0
    assert r.cost == pytest.approx(2400 * SPOT / 3600)
    assert r.spot_hours == pytest.approx(0.5)


def test_a_reclaim_costs_a_second_changeover():
    # spot: tick 0 changeover, tick 1 work, reclaimed at tick 2, back at tick 3 (changeover), ticks 4-5 work
    r = simulate(make("greedy"), job(), market([1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]))
    assert r.spot_s == 3000
    assert r.spot_work_s == 1800
    assert r.changeovers == 2 and r.preemptions == 1
    assert r.finish_s == 3600
    assert r.cost == pytest.approx(3000 * SPOT / 3600)


def test_last_tick_is_billed_to_the_second():
    r = simulate(make("greedy"), job(compute_s=900), market([1] * 12))
    assert r.spot_s == 1500  # 600 s changeover + 900 s work
    assert r.finish_s == 1500
    assert r.cost == pytest.approx(1500 * SPOT / 3600)


def test_changeover_is_exact_not_whole_ticks():
    # 700 s of changeover on 600-s ticks: the second tick holds 100 s of changeover and 500 s of work
    r = simulate(make("on-demand"), job(changeover_s=700), market([0] * 20))
    assert r.on_demand_s == 2500 and r.finish_s == 2500
    r = simulate(make("greedy"), job(changeover_s=180), market([1] * 20))
    assert r.spot_s == 1980 and r.spot_work_s == 1800
    assert exact_grid(720, 600) == (120, 5, 6)
    assert exact_grid(720, 195) == (15, 13, 48)
    assert exact_grid(1800, 30) == (30, 1, 60)
    with pytest.raises(ValueError, match="needs a 1s grid"):
        exact_grid(7, 600)


def test_switching_spot_to_on_demand_pays_at_the_new_price():
    plan = [spot(0), spot(0), ON_DEMAND]
    r = simulate(Script(plan), job(), market([1] * 20))
    # spot: 600 changeover + 600 work; on-demand: 600 changeover + 1200 work
    assert r.spot_s == 1200 and r.on_demand_s == 1800
    assert r.cost == pytest.approx((1200 * SPOT + 1800 * OD) / 3600)
    assert r.changeovers == 2


def test_zone_hop_costs_a_changeover():
    plan = [spot(0), spot(0), spot(1), spot(1), spot(1)]
    r = simulate(Script(plan), job(), market([1] * 12, [1] * 12))
    assert r.changeovers == 2
    assert r.spot_work_s == 1800 and r.spot_s == 3000


def test_asking_for_spot_where_there_is_none_waits():
    r = simulate(Script([spot(0)]), job(), market([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]))
    assert r.finish_s == 3600  # two idle ticks, then changeover and work
    assert r.changeovers == 1


def test_a_miss_is_reported_and_finished_on_demand():
    r = simulate(Script([IDLE]), job(deadline_s=3000), market([0] * 10))
    assert not r.met_deadline
    assert r.on_demand_s == 2400  # the whole job after the deadline, with its changeover
    assert r.finish_s > 3000


def test_trace_prices_are_billed_per_tick():
    import numpy as np

    from spotrun.market.trace import Trace

    t = Trace("priced", TEN_MIN, np.ones(12, dtype=bool), prices=np.array([1.0, 2.0, 3.0] + [4.0] * 9))
    r = simulate(make("greedy"), job(), Market.of([t]))
    assert r.cost == pytest.approx((600 * 1.0 + 600 * 2.0 + 600 * 3.0 + 600 * 4.0) / 3600)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(compute_s=0, deadline_s=10, changeover_s=1), "compute time must be positive"),
        (dict(compute_s=10, deadline_s=100, changeover_s=0), "changeover delay must be positive"),
        (dict(compute_s=3600, deadline_s=1800, changeover_s=60), "shorter than compute"),
        (dict(compute_s=10, deadline_s=100, changeover_s=1, spot_price=-1), "cannot be negative"),
        (dict(compute_s=10, deadline_s=100, changeover_s=1, on_demand_price=-1), "cannot be negative"),
    ],
)
def test_bad_jobs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JobSpec(**kwargs)


def test_bad_markets():
    import numpy as np

    from spotrun.market.trace import Trace

    with pytest.raises(ValueError, match="share a tick"):
        Market.of([Trace("a", 60, np.ones(5, bool)), Trace("b", 30, np.ones(5, bool))])
    with pytest.raises(ValueError, match="shorter than the deadline"):
        simulate(make("greedy"), job(deadline_s=7200), market([1] * 5))


class TickByTick:
    """A policy without `ride`: the simulator then asks it at every tick."""

    def __init__(self, policy):
        self.policy, self.name = policy, policy.name

    def reset(self, job):
        self.policy.reset(job)

    def decide(self, obs):
        return self.policy.decide(obs)

    def warm(self, past, gap_s):
        getattr(self.policy, "warm", lambda *a: None)(past, gap_s)


@pytest.mark.parametrize("seed", [1, 5, 10, 22])
def test_riding_unchanged_ticks_gives_the_tick_by_tick_result(seed):
    """The fast path (a policy riding ticks where the market does not change) bills exactly as asking it every tick."""
    job, m = random_market(seed)
    for start in m.random_starts(job, 3, seed):
        for name in ONLINE:
            fast, slow = simulate(make(name), job, m, int(start)), simulate(TickByTick(make(name)), job, m, int(start))
            assert fast.cost == pytest.approx(slow.cost, rel=1e-9)
            assert (fast.changeovers, fast.met_deadline) == (slow.changeovers, slow.met_deadline)
            assert fast.spot_work_s == pytest.approx(slow.spot_work_s) and fast.finish_s == pytest.approx(slow.finish_s)
