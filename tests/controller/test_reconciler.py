"""The reconciler end to end on the real local provider (real instances, agents, signals)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from spotrun.controller import api, repo
from spotrun.controller.db import Database
from spotrun.controller.leases import LeaseLost, owner_of
from spotrun.controller.models import Attempt, Controller, Job, shard_of
from spotrun.controller.reconciler import Reconciler, backoff_delay, classify
from spotrun.providers.base import Instance, InstanceState, LaunchRequest

from .helpers import async_wait_until, counter_job, progress


@pytest.fixture
async def reconciler(db: Database, providers: dict):
    r = Reconciler(db, providers, interval=0.1, rng=random.Random(0))
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    yield r
    stop.set()
    await task


def submit(spec: dict) -> str:
    return api.launch(spec, start_controller=False).id


def view(db: Database, job_id: str) -> dict:
    return repo.get_view(db, job_id)


async def wait_status(db: Database, job_id: str, *statuses: str, timeout: float = 120) -> dict:
    await async_wait_until(lambda: view(db, job_id)["status"] in statuses, timeout, f"job {job_id} to be {statuses}")
    return view(db, job_id)


def live_instance(db: Database, job_id: str) -> str | None:
    with db.session() as s:
        live = [a for a in repo.attempts_of(s, job_id) if a.ended_at is None and a.instance_id]
    return live[-1].instance_id if live else None


def test_classify_tells_reclaim_from_error() -> None:
    def inst(state: InstanceState, rc: int | None = None) -> Instance:
        return Instance(id="i", token="t", job_id="j", attempt=1, state=state, spot=True, returncode=rc)

    assert classify(inst(InstanceState.EXITED, 0)).value == "success"
    assert classify(inst(InstanceState.EXITED, 75)).value == "reclaim"
    assert classify(inst(InstanceState.EXITED, 1)).value == "error"
    assert classify(inst(InstanceState.EXITED, 143)).value == "error"
    assert classify(inst(InstanceState.RECLAIMED, 75)).value == "reclaim"
    assert classify(inst(InstanceState.GONE)).value == "reclaim"
    # The agent's own status first: done is done, even on a machine reclaimed right after.
    assert classify(inst(InstanceState.RECLAIMED, 0)).value == "success"
    assert classify(inst(InstanceState.TERMINATED, 0)).value == "success"
    assert classify(inst(InstanceState.RECLAIMED)).value == "reclaim"
    assert classify(inst(InstanceState.EXITED, -9)).value == "reclaim"  # the agent was killed: lost


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(1.0, 8.0, n, rng) for n in range(6)]
    assert all(0.5 * min(8.0, 2**n) <= d <= min(8.0, 2**n) for n, d in enumerate(delays))
    assert max(delays) <= 8.0
    assert len({round(backoff_delay(1.0, 8.0, 3, rng), 6) for _ in range(5)}) > 1  # jitter


async def test_reclaimed_job_ends_like_an_uninterrupted_one(tmp_path: Path, db: Database, providers: dict, reconciler: Reconciler) -> None:
    # Long enough that no reclaim lands in its last steps: a job that completes inside the
    # notice window is a success, not a reclaim.
    plain = submit(counter_job(tmp_path, "plain", steps=80))
    hit = submit(counter_job(tmp_path, "hit", steps=80, step_s=0.1))
    provider = providers["local"]
    for n in range(3):
        # Wait for a fresh attempt to make progress, then reclaim it with a short notice.
        before = progress(tmp_path, "hit")
        await async_wait_until(
            lambda: view(db, hit)["attempts"] == n + 1 and progress(tmp_path, "hit") > before + 1,
            what=f"attempt {n + 1} to make progress",
        )
        await provider.interrupt(live_instance(db, hit), 0.5)
        await async_wait_until(lambda: view(db, hit)["reclaims"] == n + 1, what=f"reclaim {n + 1} to be seen")
    final = await wait_status(db, hit, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    assert (await wait_status(db, plain, "SUCCEEDED", "FAILED"))["status"] == "SUCCEEDED"
    assert (tmp_path / "hit.result").read_text() == (tmp_path / "plain.result").read_text()

    assert (final["reclaims"], final["errors"], final["attempts"]) == (3, 0, 4)
    causes = [a["cause"] for a in final["attempt_list"]]
    assert causes == ["reclaim", "reclaim", "reclaim", "success"]
    kinds = [e["kind"] for e in final["events"]]
    assert kinds.count("reclaim") == 3 and kinds[-1] == "succeeded"
    assert final["cost"] > 0 and final["on_demand_cost"] > final["cost"] and final["saving"] > 0
    # The first attempt's log survives its instance: it shows the work and the notice.
    first = api.read_log(db, hit, 1)
    assert "starting at step 0" in first and "step 1\n" in first
    later = api.read_log(db, hit, 4)
    assert "starting at step 0" not in later and "done" in later


async def test_failing_job_stops_at_its_error_budget(tmp_path: Path, db: Database, reconciler: Reconciler) -> None:
    job = submit({"run": "echo boom >&2; exit 3", "recovery": {"max_errors": 1, "backoff": {"base": "50ms"}}})
    final = await wait_status(db, job, "FAILED", "SUCCEEDED")
    assert final["status"] == "FAILED"
    assert (final["errors"], final["reclaims"], final["attempts"]) == (2, 0, 2)
    assert "exit 3" in final["reason"] and "boom" in final["reason"]
    assert [a["exit_status"] for a in final["attempt_list"]] == [3, 3]


async def test_cancel_then_resume_from_saved_progress(tmp_path: Path, db: Database, providers: dict, reconciler: Reconciler) -> None:
    job = submit(counter_job(tmp_path, "long", steps=40, step_s=0.1))
    await async_wait_until(lambda: progress(tmp_path, "long") >= 3, what="progress before cancel")
    instance = live_instance(db, job)
    repo.request_cancel(db, job)
    final = await wait_status(db, job, "CANCELLED")
    assert final["attempt_list"][-1]["cause"] == "cancel"
    inst = await providers["local"].query(instance)
    assert inst.state in (InstanceState.TERMINATED, InstanceState.GONE)
    saved = progress(tmp_path, "long")
    assert 3 <= saved < 40

    repo.request_resume(db, job)
    final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    log = api.read_log(db, job, 2)
    resumed_at = int(log.split("starting at step ")[1].split()[0])
    assert resumed_at >= saved  # it went on from the kept state, not from zero
    assert [e["kind"] for e in final["events"]].count("resume") == 1


async def test_cancel_during_recovery_launches_nothing_more(tmp_path: Path, db: Database, reconciler: Reconciler) -> None:
    job = submit({"run": "exit 4", "recovery": {"max_errors": 5, "backoff": {"base": "1h", "max": "1h"}}})
    await wait_status(db, job, "RECOVERING")
    repo.request_cancel(db, job)
    final = await wait_status(db, job, "CANCELLED")
    assert final["attempts"] == 1 and final["errors"] == 1


async def test_refused_spot_backs_off_then_auto_goes_on_demand(tmp_path: Path, db: Database, local_root: Path) -> None:
    from spotrun.providers.local.market import MarketConfig
    from spotrun.providers.local.provider import LocalProvider

    trace = tmp_path / "never.json"
    trace.write_text('{"metadata": {"gap_seconds": 3600}, "data": [0]}')
    provider = LocalProvider(local_root, MarketConfig(trace=str(trace)))
    r = Reconciler(db, {"local": provider}, interval=0.05, rng=random.Random(0))
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    try:
        auto = submit({"run": "echo on-demand works", "resources": {"spot": "auto"}, "recovery": {"backoff": {"base": "20ms", "max": "50ms"}}})
        spot = submit({"run": "true", "recovery": {"backoff": {"base": "20ms", "max": "50ms"}}})
        final = await wait_status(db, auto, "SUCCEEDED", "FAILED")
        assert final["status"] == "SUCCEEDED", final["reason"]
        capacity = [(a["spot"], a["cause"]) for a in final["attempt_list"]]
        assert capacity == [(True, "refused")] * 3 + [(False, "success")]
        assert [e["kind"] for e in final["events"]].count("refused") == 3
        assert "no spot capacity" in next(e["message"] for e in final["events"] if e["kind"] == "refused")
        await async_wait_until(lambda: view(db, spot)["attempts"] == 0 and len(view(db, spot)["attempt_list"]) >= 5, what="spot-only refusals")
        # Between refusals it waits PENDING (PROVISIONING only while an attempt is being refused).
        await async_wait_until(lambda: view(db, spot)["status"] == "PENDING", what="the spot-only job to wait PENDING")
        assert all(a["cause"] == "refused" and a["spot"] for a in view(db, spot)["attempt_list"])
        repo.request_cancel(db, spot)
        await wait_status(db, spot, "CANCELLED")
    finally:
        stop.set()
        await task
        for inst in await provider.list_instances():
            await provider.terminate(inst.id)


async def test_only_instances_of_this_database_whose_attempt_ended_are_terminated(tmp_path: Path, db: Database, providers: dict) -> None:
    provider = providers["local"]
    job = submit(counter_job(tmp_path, "owned", steps=400, step_s=0.1))
    r = Reconciler(db, providers, interval=0.1)
    await r.run_once()  # launches the job's instance
    await r.settle()
    owned = live_instance(db, job)
    assert (await provider.query(owned)).owner == db.identity
    with db.session() as s:  # an attempt recorded as ended whose instance still runs: a leak
        ended = Attempt(job_id=job, number=0, token=f"{job}-ended", spot=True, created_at=0.0, ended_at=1.0, cause="reclaim", cost=0.0)
        s.add(ended)
    leak = await provider.launch(LaunchRequest(token=f"{job}-ended", job_id=job, attempt=0, run="sleep 600", owner=db.identity))
    # Another controller's (another database) and one from before identities: never ours to judge.
    foreign = await provider.launch(LaunchRequest(token="other-db", job_id="ghost", attempt=1, run="sleep 600", owner="0ther"))
    unowned = await provider.launch(LaunchRequest(token="no-owner", job_id="ghost2", attempt=1, run="sleep 600"))
    terminated = await r.sweep_leaks()
    await r.settle()
    assert terminated == [leak.id]
    assert (await provider.query(leak.id)).state in (InstanceState.TERMINATED, InstanceState.GONE)
    for alive in (owned, foreign.id, unowned.id):
        assert (await provider.query(alive)).state in (InstanceState.PENDING, InstanceState.RUNNING)


async def test_each_job_is_leased_to_one_controller_and_a_stale_write_is_refused(db: Database, providers: dict) -> None:
    job = submit({"run": "true"})
    a = Reconciler(db, providers, owner="a", lease_s=60)
    b = Reconciler(db, providers, owner="b", lease_s=60)
    for r in (a, b, a):  # both registered, both live
        r.leases.heartbeat({})
    owner, other = (a, b) if owner_of(shard_of(job), ["a", "b"]) == "a" else (b, a)
    assert other.leases.claim(set()) == []  # not its shard
    assert [c.id for c in owner.leases.claim(set())] == [job]
    assert other.leases.claim(set()) == []  # held by a live controller
    with db.session() as s:
        held = s.get(Job, job)
    with db.session() as s:  # the owner stops renewing: its lease runs out
        s.get(Controller, owner.owner).expires_at = 0.0
    other.leases.heartbeat({})
    assert [c.id for c in other.leases.claim(set())] == [job]
    assert owner.leases.claim(set()) == []
    # The old owner wakes and writes with the fencing token it read: refused, nothing written.
    with pytest.raises(LeaseLost), owner._txn(held) as s:
        s.add(Attempt(job_id=job, number=1, token="stale", spot=True, created_at=0.0, cost=0.0))
    with db.session() as s:
        row = s.get(Job, job)
        assert (row.lease_owner, row.lease_token) == ("b" if owner is a else "a", held.lease_token + 1)
        assert s.query(Attempt).count() == 0


async def test_launch_the_provider_rejects_fails_at_once(tmp_path: Path, db: Database, providers: dict) -> None:
    code = tmp_path / "code"
    code.mkdir()
    job = submit({"run": "true", "workdir": str(code)})
    code.rmdir()  # gone between submission and launch
    r = Reconciler(db, providers)
    await r.run_once()
    await r.settle()
    final = view(db, job)
    assert final["status"] == "FAILED" and "launch rejected" in final["reason"] and "workdir" in final["reason"]
    assert [a["cause"] for a in final["attempt_list"]] == ["refused"]


async def test_instance_lost_without_notice_is_a_reclaim(tmp_path: Path, db: Database, providers: dict, reconciler: Reconciler) -> None:
    import os
    import signal

    from spotrun.providers.local.records import InstanceDir

    job = submit(counter_job(tmp_path, "lost", steps=40, step_s=0.1))
    await async_wait_until(lambda: progress(tmp_path, "lost") >= 3, what="progress before the loss")
    launcher = InstanceDir(providers["local"].root, live_instance(db, job)).launcher_pid()
    os.kill(launcher, signal.SIGKILL)  # the machine vanishes: no notice, no exit status
    final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    assert (final["reclaims"], final["errors"]) == (1, 0)
    assert [a["cause"] for a in final["attempt_list"]] == ["reclaim", "success"]
    assert any(e["kind"] == "reclaim" and "lost" in e["message"] for e in final["events"])


LEDGER = Path(__file__).with_name("ledger.py")


async def test_a_job_that_finishes_inside_the_notice_window_succeeds_once(tmp_path: Path, db: Database, providers: dict, reconciler: Reconciler) -> None:
    import sys

    ledger = tmp_path / "ledger"
    job = submit({"run": f"exec {sys.executable} {LEDGER}", "env": {"LEDGER": str(ledger), "NOTICE_ENDS_WORK": "1"},
                  "recovery": {"backoff": {"base": "50ms", "max": "1s"}}})
    await async_wait_until(lambda: Path(f"{ledger}.ready").exists() and live_instance(db, job), what="the job to start")
    await providers["local"].interrupt(live_instance(db, job), 5.0)  # it finishes on the notice
    final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    assert ledger.read_text().splitlines() == [f"{job} 1"]  # its side effect happened once
    assert [(a["cause"], a["exit_status"]) for a in final["attempt_list"]] == [("success", 0)]
    assert final["reclaims"] == 0
