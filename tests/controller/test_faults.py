"""Randomized faults, in CI's time budget: spot reclaims with short notices (jobs that finish
inside the notice window among them), the agent and the controller SIGKILLed at random moments,
and a second controller on another database in the same home. Every job must complete exactly
once (its side effect counted in a ledger), and no instance another controller owns is touched.

The seed is printed on failure; `SPOTRUN_FAULT_SEED=N` replays a run's schedule.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from spotrun.controller import api, repo
from spotrun.controller.db import Database
from spotrun.providers.base import InstanceState, LaunchRequest
from spotrun.providers.local.provider import LocalProvider
from spotrun.providers.local.records import InstanceDir

LEDGER = Path(__file__).with_name("ledger.py")
JOBS, OTHER_JOBS = 4, 1
KILLS = 3  # of the controller, and of agents, each
BUDGET_S = 150.0  # a hang detector for the whole run, not a timing claim
MARKET = ["--reclaim-every", "4s", "--lead-time", "2s"]  # the agent SIGKILLs 1 s into a notice


def job_spec(ledger: Path, rng: random.Random) -> dict:
    return {
        "run": f"exec {sys.executable} {LEDGER}",
        "env": {"LEDGER": str(ledger), "WORK_S": f"{rng.uniform(0.5, 2.5):.2f}"},
        "recovery": {"max_reclaims": 1000, "backoff": {"base": "50ms", "max": "200ms"}},
    }


def kill_an_agent(provider: LocalProvider, rng: random.Random, spare: str) -> bool:
    live = [p for p in (provider.root / "instances").iterdir() if p.is_dir() and p.name != spare]
    rng.shuffle(live)
    for path in live:
        state = InstanceDir(provider.root, path.name).read_state()
        if state is not None and state.state == InstanceState.RUNNING and state.agent_pid:
            try:
                os.kill(state.agent_pid, signal.SIGKILL)
                return True
            except ProcessLookupError:
                continue
    return False


def test_every_job_completes_exactly_once_under_random_faults(tmp_path: Path, spotrun_home: Path, db: Database, providers: dict, controller_process) -> None:
    seed = int(os.environ.get("SPOTRUN_FAULT_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    ledger = tmp_path / "ledger"
    provider: LocalProvider = providers["local"]
    # An instance of a controller cluster that is not ours (its own database elsewhere).
    foreign = asyncio.run(provider.launch(LaunchRequest(token="foreign-1", job_id="foreign", attempt=1,
                                                        run="sleep 600", owner="another-database")))
    other_url = f"sqlite:///{spotrun_home / 'other.db'}"
    other_db = Database(other_url)
    ours = [api.launch(job_spec(ledger, rng), start_controller=False).id for _ in range(JOBS)]
    theirs = [api.launch(job_spec(ledger, rng), db_url=other_url, start_controller=False).id for _ in range(OTHER_JOBS)]
    other = controller_process(env={"SPOTRUN_DB_URL": other_url}, args=MARKET)
    controller = controller_process(args=MARKET + ["--seed", str(seed)])
    done = lambda d, ids: all(repo.get_view(d, j, detail=False)["status"] in ("SUCCEEDED", "FAILED") for j in ids)  # noqa: E731
    kills = Counter()
    deadline = time.monotonic() + BUDGET_S
    try:
        while not (done(db, ours) and done(other_db, theirs)):
            assert time.monotonic() < deadline, (f"seed {seed}: jobs unfinished after {BUDGET_S:.0f}s; kills {dict(kills)}",
                                                 [(v["id"], v["status"], [e["message"] for e in v["events"][-4:]])
                                                  for d, ids in ((db, ours), (other_db, theirs)) for v in (repo.get_view(d, j) for j in ids)
                                                  if v["status"] != "SUCCEEDED"])
            time.sleep(rng.uniform(0.3, 1.5))
            fault = rng.random()
            if fault < 0.25 and kills["controller"] < KILLS:
                controller.proc.kill()  # SIGKILL, anywhere in a pass or an action
                controller.proc.wait()
                controller = controller_process(args=MARKET + ["--seed", str(rng.randrange(1000))])
                kills["controller"] += 1
            elif fault < 0.5 and kills["agent"] < KILLS and kill_an_agent(provider, rng, foreign.id):
                kills["agent"] += 1
    finally:
        controller.kill()
        other.kill()
    for d, ids in ((db, ours), (other_db, theirs)):
        for job in ids:
            view = repo.get_view(d, job)
            assert view["status"] == "SUCCEEDED", (seed, job, view["reason"], view["events"])
            assert [a["cause"] for a in view["attempt_list"]].count("success") == 1, (seed, view["attempt_list"])
    entries = [line.split() for line in ledger.read_text().splitlines()]
    lines = Counter(job for job, _ in entries)
    twice = {job: ([a for j, a in entries if j == job],
                   [(a["number"], a["cause"], a["instance_id"], a["exit_status"]) for a in repo.get_view(d, job)["attempt_list"]])
             for d, ids in ((db, ours), (other_db, theirs)) for job in ids if lines[job] != 1}
    assert not twice, f"seed {seed}: side effects {lines}, kills {dict(kills)}; (ledger attempts, attempts) of each: {twice}"
    assert set(lines) == set(ours + theirs), (seed, lines)
    # Nothing leaked, nothing of another controller's touched.
    live = [i for i in asyncio.run(provider.list_instances()) if i.state in (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.NOTICE)]
    assert [i.id for i in live] == [foreign.id], (seed, live)
    other_db.close()
