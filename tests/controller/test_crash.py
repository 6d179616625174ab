"""The controller killed (SIGKILL) at chosen points and started again: no job lost, none run
twice, no instance leaked. Controllers run as real child processes, as the daemon does."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from spotrun.controller import api, repo
from spotrun.controller.db import Database

from .helpers import counter_job, progress, wait_until


def submit(spec: dict) -> str:
    return api.launch(spec, start_controller=False).id


def attempts(db: Database, job_id: str) -> list:
    with db.session() as s:
        return repo.attempts_of(s, job_id)


def instances(providers: dict, job_id: str) -> list:
    return asyncio.run(providers["local"].list_instances(job_id))


def status(db: Database, job_id: str) -> str:
    return repo.get_view(db, job_id, detail=False)["status"]


@pytest.mark.parametrize("point", ["after-attempt-row", "after-launch"])
def test_crash_around_launch_reuses_the_token(point: str, tmp_path: Path, db: Database, providers: dict, controller_process) -> None:
    job = submit(counter_job(tmp_path, "c", steps=5))
    crashed = controller_process(env={"SPOTRUN_TEST_CRASH_AT": point})
    assert crashed.wait_exit() == -signal.SIGKILL, crashed.output()
    (row,) = attempts(db, job)
    assert row.instance_id is None  # the crash came before the launch was recorded
    launched = instances(providers, job)
    assert len(launched) == (0 if point == "after-attempt-row" else 1)
    assert all(i.token == row.token for i in launched)

    controller_process()
    wait_until(lambda: status(db, job) == "SUCCEEDED", what=f"job to succeed; last status {status(db, job)}")
    (row,) = attempts(db, job)  # still one attempt: the same token was launched again
    (inst,) = instances(providers, job)  # and exactly one instance ever existed for it
    assert inst.token == row.token and inst.id == row.instance_id
    assert (tmp_path / "c.result").exists()


def test_crash_after_freeing_an_ended_instance(tmp_path: Path, db: Database, providers: dict, controller_process) -> None:
    job = submit(counter_job(tmp_path, "e", steps=3))
    crashed = controller_process(env={"SPOTRUN_TEST_CRASH_AT": "after-terminate"})
    assert crashed.wait_exit() == -signal.SIGKILL, crashed.output()
    assert status(db, job) in ("PROVISIONING", "RUNNING")  # the end was not recorded yet
    assert (tmp_path / "e.result").exists()
    controller_process()
    wait_until(lambda: status(db, job) == "SUCCEEDED", what="the restarted controller to record the end")
    (row,) = attempts(db, job)
    assert (row.cause, row.exit_status) == ("success", 0)
    assert len(instances(providers, job)) == 1


def test_controller_killed_mid_job_and_restarted(tmp_path: Path, db: Database, providers: dict, controller_process) -> None:
    job = submit(counter_job(tmp_path, "k", steps=40, step_s=0.1))
    first = controller_process()
    wait_until(lambda: progress(tmp_path, "k") >= 5, what="progress under the first controller")
    first.kill()
    at_kill = progress(tmp_path, "k")
    # The instance works on without a controller, as a cloud VM would.
    wait_until(lambda: progress(tmp_path, "k") > at_kill + 2, what="progress with no controller")
    controller_process()
    wait_until(lambda: status(db, job) == "SUCCEEDED", what="job to succeed after the restart")
    assert len(attempts(db, job)) == 1 and len(instances(providers, job)) == 1
    log = api.read_log(db, job, 1)
    assert log.count("starting at step") == 1 and "done" in log


def test_second_controller_on_one_database(tmp_path: Path, db: Database, providers: dict, controller_process) -> None:
    job = submit(counter_job(tmp_path, "two", steps=10))
    first = controller_process()
    wait_until(lambda: status(db, job) in ("RUNNING", "SUCCEEDED"), what="the first controller to run the job")
    second = controller_process()
    if db.is_sqlite:  # one controller per SQLite file: the second refuses, clearly
        assert second.wait_exit() == 2
        out = second.output()
        assert "another spotrun controller" in out and str(first.proc.pid) in out and "Traceback" not in out
    wait_until(lambda: status(db, job) == "SUCCEEDED", what="job to succeed")
    # On PostgreSQL both run; the job's lease kept it to one of them: one attempt, one instance.
    assert len(attempts(db, job)) == 1 and len(instances(providers, job)) == 1
