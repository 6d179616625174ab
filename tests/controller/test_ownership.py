"""Controllers that share a home, a database or neither: each acts only on what is its own,
a pass never waits on one slow launch, and secrets and files stay private."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from spotrun.controller import api, repo
from spotrun.controller.db import Database
from spotrun.controller.reconciler import Reconciler
from spotrun.providers.base import Instance, LaunchRequest

from .helpers import WAIT_S, async_wait_until, wait_until


def cli(spotrun_cmd: list[str], *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*spotrun_cmd, *args], capture_output=True, text=True, timeout=WAIT_S,
                          env={**os.environ, **(env or {})})


def test_controllers_in_one_home_keep_their_own_discovery_file(spotrun_cmd: list[str], spotrun_home: Path, db_url: str, controller_process) -> None:
    from spotrun.controller.service import stop_daemon

    first = json.loads(cli(spotrun_cmd, "controller", "start", "--json").stdout)
    try:
        # Another database in the same home: it runs, and stopping it leaves the first's file alone.
        other = controller_process(env={"SPOTRUN_DB_URL": f"sqlite:///{spotrun_home / 'other.db'}"})
        wait_until(lambda: json.loads(cli(spotrun_cmd, "controller", "status", "--json",
                                          env={"SPOTRUN_DB_URL": f"sqlite:///{spotrun_home / 'other.db'}"}).stdout).get("pid") == other.proc.pid,
                   what="the other database's controller to record itself")
        # A second controller on the same database: refused on SQLite, allowed on PostgreSQL,
        # and in neither case does it take over the discovery file.
        second = controller_process()
        if db_url.startswith("sqlite"):
            assert second.wait_exit() != 0 and "already runs" in second.output()
        else:
            wait_until(lambda: "is the one recorded" in second.output(), what="the second controller to start")
        other.proc.terminate()
        assert other.wait_exit() == 0
        second.kill()
        status = json.loads(cli(spotrun_cmd, "controller", "status", "--json").stdout)
        assert (status["running"], status["pid"]) == (True, first["pid"])
        assert f"controller (pid {first['pid']}) stopped" in cli(spotrun_cmd, "controller", "stop").stdout
        assert json.loads(cli(spotrun_cmd, "controller", "status", "--json").stdout)["running"] is False
    finally:
        stop_daemon()


class SlowLaunches:
    """The local provider, except that launching the job `slow` waits until `release` is set:
    a cloud API that hangs on one request."""

    def __init__(self, inner, slow_job: str) -> None:
        self.inner, self.slow_job, self.release = inner, slow_job, asyncio.Event()
        self.name = inner.name

    async def launch(self, request: LaunchRequest) -> Instance:
        if request.job_id == self.slow_job:
            await self.release.wait()
        return await self.inner.launch(request)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


async def test_a_pass_records_outcomes_while_a_launch_hangs(db: Database, providers: dict) -> None:
    slow = api.launch({"run": "true"}, start_controller=False).id
    quick = api.launch({"run": "true"}, start_controller=False).id
    provider = SlowLaunches(providers["local"], slow)
    r = Reconciler(db, {"local": provider}, interval=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    try:
        await async_wait_until(lambda: repo.get_view(db, quick)["status"] == "SUCCEEDED", what="the quick job's outcome")
        assert repo.get_view(db, slow)["status"] == "PROVISIONING"  # its launch still hangs
        provider.release.set()
        await async_wait_until(lambda: repo.get_view(db, slow)["status"] == "SUCCEEDED", what="the slow job")
        assert [a["cause"] for a in repo.get_view(db, slow)["attempt_list"]] == ["success"]  # launched once
    finally:
        provider.release.set()
        stop.set()
        await task


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_secrets_reach_the_command_and_nowhere_else(tmp_path: Path, spotrun_home: Path, db: Database, providers: dict) -> None:
    value, store_key = "s3cr3t-" + os.urandom(8).hex(), "k3y-" + os.urandom(8).hex()
    token_file = tmp_path / "token"
    token_file.write_text(value + "\n")
    seen = tmp_path / "seen"
    os.environ["SPOTRUN_TEST_FROM_ENV"] = value + "-env"
    try:
        spec = {"run": f"{sys.executable} -c \"import os; open('{seen}', 'w').write(os.environ['API_TOKEN'] + ' ' + os.environ['OTHER'])\"",
                "secrets": {"API_TOKEN": {"file": str(token_file)}, "OTHER": {"env": "SPOTRUN_TEST_FROM_ENV"}},
                "checkpoint": {"store": f"file://{tmp_path}/store?secret_access_key={store_key}"}}
        job = api.launch(spec, start_controller=False).id
        r = Reconciler(db, providers, interval=0.1)
        stop = asyncio.Event()
        task = asyncio.create_task(r.run(stop))
        try:
            await async_wait_until(lambda: repo.get_view(db, job)["status"] in ("SUCCEEDED", "FAILED"), what="the job")
        finally:
            stop.set()
            await task
    finally:
        del os.environ["SPOTRUN_TEST_FROM_ENV"]
    view = repo.get_view(db, job)
    assert view["status"] == "SUCCEEDED", view["reason"]
    assert seen.read_text() == f"{value} {value}-env"  # the command got both
    shown = json.dumps(view)  # status --json: secret references and a redacted store URL only
    assert value not in shown and store_key not in shown
    assert view["spec"]["checkpoint"]["store"].endswith("?secret_access_key=***")
    for path in spotrun_home.rglob("*"):  # database, records, logs: no secret in clear
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path
            if "instances" in path.parts:  # the store URL goes by environment, not into instance records
                assert store_key.encode() not in path.read_bytes(), path
    # Everything under $SPOTRUN_HOME is the user's only.
    assert _mode(spotrun_home) == 0o700
    assert _mode(spotrun_home / "local" / "instances") == 0o700
    if db.sqlite_path is not None:
        assert _mode(db.sqlite_path) == 0o600
    logs = list((spotrun_home / "logs").rglob("*.log")) + list((spotrun_home / "local" / "logs").rglob("*.log"))
    assert logs and all(_mode(p) == 0o600 for p in logs)
