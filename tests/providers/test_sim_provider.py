"""The sim provider: reclaims and refusals follow the trace, boot and work play out on the clock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from spotrun.providers.base import InstanceState, LaunchRefused, LaunchRequest
from spotrun.providers.local.market import MarketConfig
from spotrun.providers.sim import SimConfig, SimProvider, VirtualClock

GAP = 600.0
# Zone a: up for ticks 0-2, down 3-4, up 5-9. Zone b: always up, with a price per tick.
ZONE_A = [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]
ZONE_B = [1] * 10


def _traces(tmp_path: Path) -> dict[str, str]:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"metadata": {"gap_seconds": GAP}, "data": ZONE_A}))
    b.write_text(json.dumps({"metadata": {"gap_seconds": GAP}, "data": ZONE_B, "prices": [0.5 + i / 10 for i in range(10)]}))
    return {"za": str(a), "zb": str(b)}


def _provider(tmp_path: Path, lead: float = 60.0, boot: float = 30.0) -> tuple[SimProvider, VirtualClock]:
    clock = VirtualClock(1000.0)
    market = MarketConfig(trace=_traces(tmp_path), lead_s=lead, trace_epoch=1000.0)
    return SimProvider(SimConfig(market=market, boot_s=boot), clock), clock


def _req(token: str, zone: str = "za", spot: bool = True, work: str | None = None, job: str = "j1", **kw) -> LaunchRequest:
    cloud = {"sim": {"work": work}} if work else {}
    return LaunchRequest(token=token, job_id=job, attempt=1, run="true", spot=spot, zone=zone, cloud=cloud, **kw)


def run(coro):
    return asyncio.run(coro)


def test_reclaim_and_refusal_follow_the_trace(tmp_path: Path) -> None:
    sim, clock = _provider(tmp_path)

    async def go() -> None:
        inst = await sim.launch(_req("t1"))
        assert inst.state == InstanceState.PENDING and inst.zone == "za"
        clock.advance(30)  # booted
        assert (await sim.query(inst.id)).state == InstanceState.RUNNING
        # Capacity goes at tick 3: the notice then, the instance gone one lead later.
        clock.set(1000 + 3 * GAP - 1)
        assert (await sim.query(inst.id)).state == InstanceState.RUNNING
        clock.set(1000 + 3 * GAP)
        assert (await sim.query(inst.id)).state == InstanceState.NOTICE
        clock.set(1000 + 3 * GAP + 60)
        gone = await sim.query(inst.id)
        assert (gone.state, gone.ended_at, gone.returncode) == (InstanceState.RECLAIMED, 1000 + 3 * GAP + 60, None)
        # Ticks 3-4 have no capacity: spot refused, on-demand and another zone still launch.
        with pytest.raises(LaunchRefused, match="no spot capacity in za"):
            await sim.launch(_req("t2"))
        assert sim.spot_available(None, "za") is False and sim.spot_available(None, "zb") is True
        od = await sim.launch(_req("t3", spot=False))
        assert not od.spot and od.price_per_hour == sim.prices(None, "za")[1]
        clock.set(1000 + 5 * GAP)  # back at tick 5
        again = await sim.launch(_req("t4"))
        assert again.state == InstanceState.PENDING
        clock.set(1000 + 20 * GAP)  # the trace loops: its next gap is at tick 13
        ended = await sim.query(again.id)
        assert ended.state == InstanceState.RECLAIMED and ended.ended_at == 1000 + 13 * GAP + 60
        # Zone b's spot price is the trace's own at the current tick.
        clock.set(1000 + 21 * GAP)
        assert sim.prices(None, "zb")[0] == pytest.approx(0.6)
        with pytest.raises(ValueError, match="zone 'zc' has no trace"):
            await sim.launch(_req("t5", zone="zc"))

    run(go())


def test_work_carries_over_attempts_and_finishes(tmp_path: Path) -> None:
    sim, clock = _provider(tmp_path)

    async def go() -> None:
        first = await sim.launch(_req("w1", work="1000s"))
        clock.advance(30 + 400)  # booted, then 400 s of work
        await sim.terminate(first.id)
        assert (await sim.query(first.id)).state == InstanceState.TERMINATED
        second = await sim.launch(_req("w2", zone="zb", work="1000s"))
        clock.advance(30 + 599)
        assert (await sim.query(second.id)).state == InstanceState.RUNNING
        clock.advance(1)  # 400 + 600 = 1000 s done
        done = await sim.query(second.id)
        assert (done.state, done.returncode, done.ended_at) == (InstanceState.EXITED, 0, clock.time())

    run(go())


def test_launch_is_idempotent_and_interrupt_gives_the_lead(tmp_path: Path) -> None:
    sim, clock = _provider(tmp_path)

    async def go() -> None:
        a = await sim.launch(_req("same", zone="zb"))
        b = await sim.launch(_req("same", zone="zb"))
        assert a.id == b.id and len(await sim.list_instances()) == 1
        await sim.interrupt(a.id, lead_s=5)
        assert (await sim.query(a.id)).state == InstanceState.NOTICE
        clock.advance(5)
        assert (await sim.query(a.id)).state == InstanceState.RECLAIMED
        with pytest.raises(ValueError, match="not running"):
            await sim.interrupt(a.id)
        assert (await sim.query("sim-nope")).state == InstanceState.GONE
        # Ended instances are forgotten after `retain_s`: the fleet's memory stays its size.
        clock.advance(sim.config.retain_s + 1)
        assert await sim.list_instances() == []

    run(go())


def test_rate_reclaims_are_reproducible(tmp_path: Path) -> None:
    """Without a trace, reclaims come at an exponential rate, the same draws for the same seed."""

    async def lifetimes() -> list[float]:
        clock = VirtualClock(0.0)
        sim = SimProvider(SimConfig(market=MarketConfig(mean_lifetime_s=100.0, seed=7, lead_s=0.0)), clock)
        ids = [(await sim.launch(_req(f"r{i}", zone=None, job=f"j{i}"))).id for i in range(2000)]
        clock.set(10_000.0)
        return [i.ended_at for i in await sim.list_instances() if i.id in ids]

    ends = run(lifetimes())
    assert ends == run(lifetimes())
    assert 85 < sum(ends) / len(ends) < 115  # mean lifetime 100 s, 2000 draws


def test_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`$SPOTRUN_SIM` names the controller's sim market; a bad one is one line naming the file."""
    traces = _traces(tmp_path)
    path = tmp_path / "sim.yaml"
    path.write_text(f"trace: {{za: {traces['za']}}}\nlead: 1m\nboot: 30s\nzone_prices: {{za: 0.25}}\n")
    monkeypatch.setenv("SPOTRUN_SIM", str(path))
    config = SimConfig.from_env()
    assert (config.market.notice_lead_s, config.boot_s, config.market.default_zone()) == (60.0, 30.0, "za")
    assert SimProvider(config).prices(None, "za")[0] == 0.25
    path.write_text("trace: aws-10-26-2022/us-west-2a_v100_1\nleed: 1m\n")
    with pytest.raises(ValueError, match=r"^\$SPOTRUN_SIM \(.*sim.yaml\): unknown setting leed \(known: "):
        SimConfig.from_env()
    path.write_text("trace: aws-10-26-2022/us-west-2a_v100_1\n")
    assert SimConfig.from_env().market.default_zone() == "sim-a"
