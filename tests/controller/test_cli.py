"""The CLI and the Python API, as users run them: real child processes, the real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import spotrun

from .helpers import WAIT_S, counter_job, progress, wait_until


@pytest.fixture
def daemon(db_url: str, spotrun_home: Path, providers: dict, spotrun_cmd: list[str]):
    """A background controller with quick passes, stopped after the test (it outlives the CLI by design)."""
    from spotrun.controller.service import stop_daemon

    started = json.loads(cli(spotrun_cmd, "controller", "start", "--interval", "200ms", "--json").stdout)
    yield started
    stop_daemon()


def cli(spotrun_cmd: list[str], *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([*spotrun_cmd, *args], capture_output=True, text=True, timeout=WAIT_S)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def said(proc: subprocess.CompletedProcess) -> str:
    """What the command printed, with the console's line wrapping undone."""
    return " ".join((proc.stdout + proc.stderr).split())


def test_import_spotrun_stays_light() -> None:
    code = "import sys, spotrun; print(sorted(m for m in ('sqlalchemy', 'alembic', 'spotrun.controller') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert spotrun.launch is spotrun.controller.api.launch


def test_controllers_started_at_once_are_one(spotrun_cmd: list[str], db_url: str) -> None:
    """A sweep script launching jobs in parallel: every starter gets the one daemon, none fails."""
    from spotrun.controller.service import stop_daemon

    starters = [
        subprocess.Popen([*spotrun_cmd, "controller", "start", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        results = [(p.wait(WAIT_S), *p.communicate()) for p in starters]
        assert [code for code, _, _ in results] == [0, 0, 0], results
        assert len({json.loads(out)["pid"] for _, out, _ in results}) == 1, results
    finally:
        stop_daemon()


def test_bad_spec_is_refused_with_line_numbers(tmp_path: Path, spotrun_cmd: list[str], db_url: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("run: python train.py\nresources:\n  spot: sometimes\n")
    proc = cli(spotrun_cmd, "launch", str(job), check=2)
    assert f"{job}:3:3: resources.spot: must be true, false or auto" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    proc = cli(spotrun_cmd, "status", "nosuchjob", check=2)
    assert "no job 'nosuchjob'" in said(proc) and "Traceback" not in said(proc)


def test_launch_follow_jobs_status_logs(tmp_path: Path, spotrun_cmd: list[str], daemon) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: hello\nrun: echo hello from the job; echo second line\n")
    proc = cli(spotrun_cmd, "launch", str(job), "--follow")
    assert "hello from the job" in proc.stdout and "second line" in proc.stdout
    (listed,) = json.loads(cli(spotrun_cmd, "jobs", "--json").stdout)
    assert (listed["name"], listed["status"], listed["attempts"], listed["reclaims"]) == ("hello", "SUCCEEDED", 1, 0)
    detail = json.loads(cli(spotrun_cmd, "status", listed["id"], "--json").stdout)
    assert [a["cause"] for a in detail["attempt_list"]] == ["success"]
    assert "hello from the job" in cli(spotrun_cmd, "logs", listed["id"], "--attempt", "1").stdout
    table = cli(spotrun_cmd, "jobs").stdout
    assert listed["id"] in table and "SUCCEEDED" in table
    ctl = json.loads(cli(spotrun_cmd, "controller", "status", "--json").stdout)
    assert (ctl["running"], ctl["pid"], ctl["active_jobs"]) == (True, daemon["pid"], 0)
    assert f"controller (pid {daemon['pid']}) stopped" in cli(spotrun_cmd, "controller", "stop").stdout
    assert json.loads(cli(spotrun_cmd, "controller", "status", "--json").stdout)["running"] is False


def test_api_interrupt_and_cancel_through_the_daemon(tmp_path: Path, spotrun_cmd: list[str], daemon) -> None:
    handle = spotrun.launch(counter_job(tmp_path, "api", steps=1000, step_s=0.1))
    wait_until(lambda: progress(tmp_path, "api") >= 3, what="the job to make progress")
    cli(spotrun_cmd, "interrupt", handle.id, "--lead-time", "500ms")
    wait_until(lambda: handle.info(detail=False)["reclaims"] == 1 and handle.status() == "RUNNING",
               what="the job to run again after the reclaim")
    resumed_from = progress(tmp_path, "api")
    wait_until(lambda: progress(tmp_path, "api") > resumed_from + 2, what="progress on the new instance")
    with pytest.raises(TimeoutError, match="still RUNNING"):
        handle.wait(timeout=0.2)

    cli(spotrun_cmd, "cancel", handle.id)
    assert handle.wait(timeout=WAIT_S) == "CANCELLED"
    info = handle.info()
    assert [a["cause"] for a in info["attempt_list"]] == ["reclaim", "cancel"]
    assert "starting at step 0" in handle.logs(attempt=1)
    assert int(handle.logs().split("starting at step ")[1].split()[0]) >= 3  # resumed, not restarted
    assert "no running instance" in said(cli(spotrun_cmd, "interrupt", handle.id, check=2))
    assert "already finished (CANCELLED)" in said(cli(spotrun_cmd, "cancel", handle.id, check=2))
