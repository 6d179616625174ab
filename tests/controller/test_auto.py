"""`spot: auto` with a deadline: the market policy picks capacity for a live job.

One local market with four zones, each replaying its own availability trace at one tick per
second: spot never there, always there, there then gone, gone then there. One job per zone runs
through the real reconciler, local provider and agent, all at once (to keep the folder fast).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from spotrun.controller import api, repo
from spotrun.controller.db import Database
from spotrun.controller.reconciler import Reconciler
from spotrun.controller.spec import SpecError, load_spec_text
from spotrun.providers.local.market import MarketConfig
from spotrun.providers.local.provider import LocalProvider

from .helpers import async_wait_until, counter_job, progress

TRACES = {  # spot available per 1 s tick; a trace loops, so each is longer than any test
    "never": [0] * 300,
    "always": [1] * 300,
    "drops": [1] * 4 + [0] * 296,
    "later": [0] * 10 + [1] * 290,
}


@pytest.fixture
def market(tmp_path: Path, local_root: Path):
    paths = {}
    for zone, data in TRACES.items():
        paths[zone] = tmp_path / f"{zone}.json"
        paths[zone].write_text(json.dumps({"metadata": {"gap_seconds": 60}, "data": data}))
    provider = LocalProvider(local_root, MarketConfig(trace=paths, time_scale=1 / 60, lead_s=1.0, trace_epoch=time.time()))
    yield provider

    async def terminate_all() -> None:
        for inst in await provider.list_instances():
            await provider.terminate(inst.id)

    asyncio.run(terminate_all())


def checksum(steps: int) -> int:
    """What counter.py writes after an uninterrupted run."""
    acc = 0
    for step in range(steps):
        acc = (acc * 31 + step + 7) % 1_000_003
    return acc


def auto_job(dir: Path, zone: str, steps: int, deadline: str, compute: str, changeover: str) -> dict:
    return counter_job(
        dir, zone, steps=steps, step_s=0.2,
        resources={"spot": "auto", "zones": [zone], "compute": compute, "changeover": changeover},
        recovery={"deadline": deadline},
    )


async def test_policy_drives_capacity_in_every_market(
    tmp_path: Path, db: Database, market: LocalProvider, spotrun_cmd: list[str]
) -> None:
    jobs = {
        "never": (20, "20s", "4s", "3s"),
        "always": (20, "60s", "4s", "2s"),
        "drops": (40, "40s", "8s", "2s"),
        "later": (80, "40s", "16s", "1s"),
    }
    ids = {zone: api.launch(auto_job(tmp_path, zone, *args), start_controller=False).id for zone, args in jobs.items()}
    reconciler = Reconciler(db, {"local": market}, interval=0.2, rng=random.Random(0))
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    try:
        def finished() -> bool:
            return all(repo.get_view(db, i, detail=False)["status"] in ("SUCCEEDED", "FAILED") for i in ids.values())

        await async_wait_until(finished, 150, "every auto job to finish")
    finally:
        stop.set()
        await task
    views = {zone: repo.get_view(db, job_id) for zone, job_id in ids.items()}

    for zone, v in views.items():
        steps, deadline = jobs[zone][0], float(jobs[zone][1].rstrip("s"))
        assert v["status"] == "SUCCEEDED", (zone, v["reason"], v["events"])
        assert v["errors"] == 0, zone
        assert v["finished_at"] - v["created_at"] <= deadline, (zone, v["wall_s"])
        assert (tmp_path / f"{zone}.result").read_text() == str(checksum(steps)), zone  # no work lost
        assert any(e["kind"] == "decision" and "policy adaptive" in e["message"] for e in v["events"]), zone

    def launched(zone: str) -> list[dict]:
        return [a for a in views[zone]["attempt_list"] if a["instance_id"]]

    # No spot ever: behind UP's line from the first pass, so on-demand makes the deadline.
    assert [a["spot"] for a in launched("never")] == [False]
    # Spot all along: it never pays for on-demand.
    assert [a["spot"] for a in launched("always")] == [True]
    # Spot reclaimed mid-run: a reclaim (its own budget), then on-demand, with the work kept.
    drops = launched("drops")
    assert drops[0]["spot"] and drops[0]["cause"] == "reclaim" and views["drops"]["reclaims"] == 1
    assert drops[-1]["spot"] is False and drops[-1]["cause"] == "success"
    # Spot arrives while on on-demand: a graceful switch, neither reclaim nor error.
    later = launched("later")
    assert [(a["spot"], a["cause"]) for a in later] == [(False, "switch"), (True, "success")]
    assert views["later"]["reclaims"] == 0
    kinds = [e["kind"] for e in views["later"]["events"]]
    assert kinds.index("switch") < kinds.index("switched")
    resumed = Path(repo.kept_log(ids["later"], later[-1]["number"])).read_text()
    assert "starting at step 0" not in resumed and "starting at step" in resumed

    # `spotrun status` shows the decisions in the job's timeline.
    out = await asyncio.to_thread(
        subprocess.run, [*spotrun_cmd, "status", ids["later"], "--json"], check=False, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    shown = [e["message"] for e in json.loads(out.stdout)["events"] if e["kind"] == "decision"]
    assert any("on-demand" in m for m in shown) and any("spot in later" in m for m in shown)


async def test_switch_marked_by_a_dead_controller_is_carried_out(tmp_path: Path, db: Database, market: LocalProvider) -> None:
    """A controller that marked an attempt `switch` and died before stopping it: the next one stops it."""
    job_id = api.launch(auto_job(tmp_path, "always", 40, "60s", "8s", "2s"), start_controller=False).id

    async def run_until(predicate, what: str) -> None:
        reconciler = Reconciler(db, {"local": market}, interval=0.2, rng=random.Random(0))  # fresh memory
        stop = asyncio.Event()
        task = asyncio.create_task(reconciler.run(stop))
        try:
            await async_wait_until(predicate, 120, what)
        finally:
            stop.set()
            await task

    await run_until(lambda: progress(tmp_path, "always") >= 3, "the first attempt to make progress")
    with db.session() as s:  # what the dead controller left: the mark, committed before any stop
        (att,) = repo.attempts_of(s, job_id)
        att.cause = "switch"
    await run_until(lambda: repo.get_view(db, job_id, detail=False)["status"] == "SUCCEEDED", "the job to succeed")
    v = repo.get_view(db, job_id)
    assert [a["cause"] for a in v["attempt_list"]] == ["switch", "success"]
    assert v["reclaims"] == 0 and v["errors"] == 0
    assert (tmp_path / "always.result").read_text() == str(checksum(40))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("run: x\nresources:\n  spot: auto\n  policy: up\nrecovery:\n  deadline: 2h\n",
         "job.yaml:2:1: resources.compute: required by `policy`"),
        ("run: x\nresources:\n  spot: auto\n  compute: 3h\nrecovery:\n  deadline: 2h\n",
         "job.yaml:4:3: resources.compute: compute 10800s plus one changeover 60s does not fit"),
        ("run: x\nresources:\n  compute: 1h\n", "job.yaml:3:3: resources.compute: only used with `spot: auto`"),
        ("run: x\nresources:\n  spot: true\n  policy: up\nrecovery:\n  deadline: 2h\n",
         "job.yaml:4:3: resources.policy: only used with `spot: auto`"),
        ("run: x\nresources:\n  spot: auto\n  compute: 1h\n  policy: fast\nrecovery:\n  deadline: 2h\n",
         "job.yaml:5:3: resources.policy: Input should be 'adaptive', 'up' or 'greedy'"),
        ("run: x\nresources:\n  spot: auto\n  compute: 1h\n  changeover: soon\nrecovery:\n  deadline: 2h\n",
         "job.yaml:5:3: resources.changeover: not a duration"),
    ],
)
def test_spec_errors_point_at_the_line(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec_text(text, "job.yaml")
    assert str(err.value).startswith(problem), str(err.value)


def test_auto_spec_parses() -> None:
    spec = load_spec_text(
        "run: x\nresources:\n  spot: auto\n  compute: 1h30m\n  changeover: 2m\n  policy: up\nrecovery:\n  deadline: 3h\n"
    )
    assert spec.deadline_aware and spec.resources.compute == 5400 and spec.resources.changeover == 120
    assert not load_spec_text("run: x\nresources:\n  spot: auto\nrecovery:\n  deadline: 3h\n").deadline_aware
