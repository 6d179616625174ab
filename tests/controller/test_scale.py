"""A pass that does not grow with the fleet, and controllers that share one PostgreSQL database.

Timing claims live in benchmarks/controller_scale.py; here, what can fail exactly: the number of
queries a steady pass makes, and exactly-once under a controller's SIGKILL among three.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from spotrun.controller import api, repo
from spotrun.controller.db import Database
from spotrun.controller.models import Job
from spotrun.controller.reconciler import Reconciler
from spotrun.providers.sim import SimConfig, SimProvider

from .conftest import _fresh_pg_database
from .helpers import WAIT_S, wait_until

LEDGER = Path(__file__).with_name("ledger.py")


async def steady_pass_cost(db: Database, jobs: int) -> tuple[int, Counter]:
    """(queries, provider calls) of one pass once every job runs."""
    for _ in range(jobs):
        api.launch({"run": "simulated", "resources": {"cloud": "sim"}}, db_url=db.url, start_controller=False)
    sim = SimProvider(SimConfig.from_dict({"boot": "0s"}))
    r = Reconciler(db, {"sim": sim}, exclusive=True, sweep_every=1, max_actions=jobs)
    while repo.count_active(db) != sum(v["status"] == "RUNNING" for v in repo.list_views(db)):
        await r.run_once()
        await r.settle()
    queries = []
    listen = lambda *_: queries.append(1)  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listen)
    calls = Counter(sim.calls)
    try:
        await r.run_once()
    finally:
        event.remove(db.engine, "before_cursor_execute", listen)
    assert not r._inflight  # nothing changed: the pass started no action
    return len(queries), sim.calls - calls


@pytest.fixture
def fresh_db(request: pytest.FixtureRequest, db_url: str) -> Iterator:
    """Makes empty databases of the test's backend, one per fleet size."""
    made = []

    def make() -> Database:
        if db_url.startswith("sqlite"):
            url, drop = f"{db_url[:-3]}-{len(made)}.db", lambda: None
        else:
            url, drop = _fresh_pg_database(request.getfixturevalue("pg_server"))
        made.append((Database(url), drop))
        return made[-1][0]

    yield make
    for database, drop in made:
        database.close()
        drop()


async def test_a_steady_pass_costs_the_same_queries_for_10_or_200_jobs(fresh_db) -> None:
    small_q, small_calls = await steady_pass_cost(fresh_db(), 10)
    large_q, large_calls = await steady_pass_cost(fresh_db(), 200)
    assert small_q == large_q, (small_q, large_q)
    # One listing of the fleet, no query per instance, whatever its size.
    assert small_calls == large_calls == Counter({"list_instances": 1}), (small_calls, large_calls)


def _spotrun(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spotrun", *args], capture_output=True, text=True, timeout=WAIT_S,
                          env={**os.environ, **env})


def test_a_controller_killed_among_three_loses_and_duplicates_nothing(tmp_path: Path, pg_server: str, spotrun_home: Path,
                                                                      providers: dict, controller_process) -> None:
    url, drop = _fresh_pg_database(pg_server)
    env = {"SPOTRUN_DB_URL": url}
    db = Database(url)
    ledger = tmp_path / "ledger"
    try:
        spec = {"run": f"exec {sys.executable} {LEDGER}", "env": {"LEDGER": str(ledger), "WORK_S": "4"},
                "recovery": {"backoff": {"base": "50ms", "max": "200ms"}}}
        jobs = [api.launch(spec, db_url=url, start_controller=False).id for _ in range(8)]
        started = [controller_process(env=env, args=["--lease", "2s"]) for _ in range(3)]
        controllers = {f"{socket.gethostname()}:{c.proc.pid}": c for c in started}

        def owners() -> dict[str, str | None]:
            with db.session() as s:
                return {j.id: j.lease_owner for j in s.query(Job).filter(Job.id.in_(jobs))}

        # Every job runs, spread over more than one controller; kill one that holds some.
        wait_until(lambda: all(repo.get_view(db, j, detail=False)["status"] == "RUNNING" for j in jobs)
                   and len(set(owners().values())) > 1, what="all jobs running on several controllers")
        victim = Counter(owners().values()).most_common(1)[0][0]
        orphans = [j for j, o in owners().items() if o == victim]
        controllers[victim].proc.kill()
        controllers[victim].proc.wait()
        killed_at = time.monotonic()
        wait_until(lambda: all(o not in (None, victim) for j, o in owners().items()
                               if repo.get_view(db, j, detail=False)["status"] not in ("SUCCEEDED", "FAILED")),
                   what="the others to take the killed controller's jobs over")
        handover_s = time.monotonic() - killed_at
        status = json.loads(_spotrun("controller", "status", "--json", env=env).stdout)
        alive = {c["id"]: c["alive"] for c in status["controllers"] if c["id"]}
        assert alive == {**{c: True for c in controllers}, victim: False}, (status, handover_s)
        wait_until(lambda: all(repo.get_view(db, j, detail=False)["status"] in ("SUCCEEDED", "FAILED") for j in jobs),
                   what="every job to finish")
        for job in jobs:
            view = repo.get_view(db, job)
            assert view["status"] == "SUCCEEDED", (job, view["reason"], view["events"])
            assert [a["cause"] for a in view["attempt_list"]].count("success") == 1, view["attempt_list"]
        lines = Counter(line.split()[0] for line in ledger.read_text().splitlines())
        assert lines == Counter({job: 1 for job in jobs}), (lines, orphans)  # each side effect once
    finally:
        for proc in controllers.values():
            proc.kill()
        db.close()
        drop()
