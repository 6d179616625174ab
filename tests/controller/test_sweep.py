"""Sweeps: one YAML (or --array N) makes N jobs with their values; bad grids fail in one line
each and create nothing; `spotrun jobs` pages and filters them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from spotrun.controller import repo
from spotrun.controller.api import launch, launch_sweep
from spotrun.controller.models import Job, JobStatus
from spotrun.controller.spec import SpecError, load_spec_text

SWEEP = """\
name: train
run: python train.py --lr {{ lr }} --seed {{seed}} --out run-{{ index }} --fmt '{{.ID}}'
env:
  OUT: out-{{ index }}
resources:
  cloud: sim
sim:
  work: 1s
sweep:
  grid:
    lr: [0.1, 1e-3]
    seed: [1, 2, 3]
    warm: [true]
"""


def _specs(db, label: str) -> list[tuple[str, dict]]:
    from spotrun.controller.spec import JobSpec

    views, total = repo.jobs_page(db, sweep=label)
    assert total == len(views)
    with db.session() as s:
        return [(v["name"], JobSpec.model_validate_json(s.get(Job, v["id"]).spec).model_dump()) for v in views]


def test_sweep_yaml_creates_the_jobs_and_they_run_on_sim(tmp_path: Path, db) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    with pytest.raises(SpecError, match="the spec is a sweep of 6 jobs: submit it with launch_sweep"):
        launch(path, db_url=db.url, start_controller=False)
    label, handles = launch_sweep(path, db_url=db.url, start_controller=False)
    assert label.startswith("train-") and len(handles) == 6
    jobs = _specs(db, label)
    assert [n for n, _ in jobs] == [f"train-{i}" for i in range(6)]  # listed in index order
    expected = [(lr, seed) for lr in ("0.1", "1e-3") for seed in ("1", "2", "3")]  # the last parameter varies fastest
    for i, ((_, spec), (lr, seed)) in enumerate(zip(jobs, expected)):
        assert spec["run"] == f"python train.py --lr {lr} --seed {seed} --out run-{i} --fmt '{{{{.ID}}}}'"
        assert spec["env"] == {"OUT": f"out-{i}", "lr": lr, "seed": seed, "warm": "true",
                               "SPOTRUN_ARRAY_INDEX": str(i), "SPOTRUN_SWEEP": label}
        assert spec["sweep"] is None
    # --array N: N copies of a plain spec, told apart by their index.
    plain = tmp_path / "plain.yaml"
    plain.write_text("run: python shard.py --shard {{ index }}\nresources: {cloud: sim}\nsim: {work: 1s}\n")
    array_label, _ = launch_sweep(plain, array=3, db_url=db.url, start_controller=False)
    assert [s["run"] for _, s in _specs(db, array_label)] == [f"python shard.py --shard {i}" for i in range(3)]
    # The real controller runs all nine on the sim provider.
    from spotrun.controller.reconciler import Reconciler
    from spotrun.providers.sim import SimConfig, SimProvider

    async def drive() -> None:
        rec = Reconciler(db, {"sim": SimProvider(SimConfig())}, interval=0.1, exclusive=True)
        for _ in range(400):
            await rec.run_once()
            views = repo.list_views(db)
            if all(v["status"] == "SUCCEEDED" for v in views):
                break
            await asyncio.sleep(0.05)
        await rec.settle()

    asyncio.run(drive())
    assert {v["status"] for v in repo.list_views(db)} == {"SUCCEEDED"}
    # `spotrun status LABEL`: the sweep at a glance, its cost the sum of its jobs'.
    summary = repo.sweep_view(db, label)
    views = repo.list_views(db, sweep=label)
    assert (summary["jobs"], summary["states"], summary["attempts"]) == (6, {"SUCCEEDED": 6}, 6)
    assert summary["cost"] == pytest.approx(sum(v["cost"] for v in views), abs=1e-5) and summary["cost"] > 0
    assert repo.sweep_view(db, "no-such-sweep") is None


@pytest.mark.parametrize(("grid", "says"), [
    ("{}", "sweep.grid: give each parameter a list of values"),
    ("{lr: []}", "sweep.grid: lr: give a non-empty list of values"),
    ("{lr: [[0.1, 0.2]]}", "sweep.grid: lr: every value must be a number, a string or true/false"),
    ("{lr: [{a: 1}]}", "sweep.grid: lr: every value must be a number"),
    ("{a: [0,1,2,3,4,5,6,7,8,9], b: [0,1,2,3,4,5,6,7,8,9], c: [0,1,2,3,4,5,6,7,8,9], d: [0,1,2,3,4,5,6,7,8,9], "
     "e: [0,1,2,3,4,5,6,7,8,9], f: [0, 1]}", "expands into 200,000 jobs, more than 100,000"),
    ("{API_KEY: [a, b]}", "looks like a credential"),
    ("{index: [1, 2]}", "`index` is each job's place"),
])
def test_bad_grid_is_one_clear_line(grid: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec_text(f"run: train {{{{ lr }}}}\nsweep:\n  grid: {grid}\n", "sweep.yaml")
    assert len(err.value.problems) == 1 and says in err.value.problems[0]
    assert err.value.problems[0].startswith("sweep.yaml:3:")  # where the grid is


@pytest.mark.parametrize(("text", "says"), [
    ("run: train\nenv: {lr: '1'}\nsweep: {grid: {lr: [1]}}\n", "sweep.yaml:2:7: env.lr: also a sweep.grid parameter"),
    ("run: train\nsweep: {grid: {lr: [1]}, array: 2}\n", "sweep.yaml:2:1: sweep: give `grid:` (a parameter grid) or `array: N`"),
    ("run: train\nsweep: {array: 0}\n", "sweep.yaml:2:9: sweep.array: must be 1 to 100,000 jobs, not 0"),
])
def test_bad_sweep_is_one_clear_line(text: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec_text(text, "sweep.yaml")
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(says)


def test_bad_sweeps_from_the_cli_create_nothing(tmp_path: Path, spotrun_cmd: list[str], spotrun_home: Path) -> None:
    (tmp_path / "sweep.yaml").write_text("run: train --lr {{ lr }} --bs {{ batch }}\nsweep: {grid: {lr: [1]}}\n")
    out = subprocess.run([*spotrun_cmd, "launch", "sweep.yaml"], capture_output=True, text=True, cwd=tmp_path)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "sweep.yaml:1:1: run: unknown template {{ batch }}: the sweep defines index, lr" in lines[0]
    (tmp_path / "job.yaml").write_text("run: train\nsweep: {array: 2}\n")
    out = subprocess.run([*spotrun_cmd, "launch", "job.yaml", "--array", "3"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "--array: the spec has a `sweep:` section already" in out.stderr
    from spotrun.controller.db import Database

    db = Database()  # the one under SPOTRUN_HOME that a launch would have written to
    try:
        assert repo.list_views(db) == []
    finally:
        db.close()


def test_jobs_pages_and_filters(db, spotrun_cmd: list[str]) -> None:
    from spotrun.controller.spec import load_spec
    from spotrun.controller.sweep import expand

    base = load_spec({"name": "lr", "run": "true", "sweep": {"array": 120}})
    a = repo.create_jobs(db, expand(base, "lr-a"), sweep="lr-a")
    b = repo.create_jobs(db, expand(base.model_copy(update={"name": "bs"}), "bs-b")[:30], sweep="bs-b")
    solo = repo.create_job(db, load_spec({"name": "solo", "run": "true"}))
    with db.session() as s:
        for job_id in a[::7]:
            s.get(Job, job_id).status = JobStatus.FAILED.value
    everything = a + b + [solo]
    # Pages of 40, each after the last id of the one before: every job once, in submission order.
    seen, after = [], None
    while True:
        page, total = repo.jobs_page(db, limit=40, after=after)
        assert total == len(everything)
        if not page:
            break
        seen += [v["id"] for v in page]
        after = page[-1]["id"]
    assert seen == everything
    assert [v["id"] for v in repo.list_views(db, sweep="bs-b")] == b
    failed, n = repo.jobs_page(db, states=["FAILED"], sweep="lr-a")
    assert [v["id"] for v in failed] == a[::7] and n == len(a[::7])
    assert [v["name"] for v in repo.list_views(db, name="lr-1?")] == [f"lr-1{i}" for i in range(10)]
    assert [v["id"] for v in repo.list_views(db, name="solo")] == [solo]
    assert repo.jobs_page(db, name="lr_1") == ([], 0)  # `_` is no wildcard
    # The CLI: filters, --json, and the footer that names the next page.
    out = subprocess.run([*spotrun_cmd, "jobs", "--sweep", "lr-a", "--state", "failed,running", "--json"],
                         capture_output=True, text=True, check=True)
    assert [v["id"] for v in json.loads(out.stdout)] == a[::7]
    out = subprocess.run([*spotrun_cmd, "jobs", "--name", "bs-*", "--limit", "10"], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, "COLUMNS": "200"})
    assert f"10 of 30 matching jobs shown; next page: --after {b[9]}" in out.stdout
    bad = subprocess.run([*spotrun_cmd, "jobs", "--state", "sleeping"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--state sleeping: not a job state" in bad.stderr
