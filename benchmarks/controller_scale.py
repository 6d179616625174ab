"""How the reconciler scales with the number of jobs: one asyncio process, many jobs.

Runs the real Reconciler and database (SQLite file; PostgreSQL too with --pg-url) against an
in-memory provider that launches instantly and lets each instance run for a few passes, so
what is timed is the controller's own work per job: its queries, commits and decisions.

Baseline, measured in the same run: the per-job cost of a pass with the smallest job count.
A ratio near 1.0 at larger counts means the cost per job stays flat (linear scaling).

    .venv/bin/python benchmarks/controller_scale.py [--jobs 100 1000] [--pg-url URL] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from spotrun.providers.base import Instance, InstanceState, LaunchRequest

RUN_PASSES = 3  # passes an instance stays RUNNING before it exits 0


class InstantProvider:
    """Instances that exist only in this dict: launch is instant, exit after RUN_PASSES queries."""

    name = "local"

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.by_token: dict[str, str] = {}
        self.queries: dict[str, int] = {}
        self.ids = itertools.count()

    async def launch(self, request: LaunchRequest) -> Instance:
        if request.token not in self.by_token:
            iid = f"i-{next(self.ids)}"
            self.by_token[request.token] = iid
            self.instances[iid] = Instance(iid, request.token, request.job_id, request.attempt,
                                           InstanceState.RUNNING, request.spot, launched_at=time.time(),
                                           price_per_hour=0.9)
        return self.instances[self.by_token[request.token]]

    async def query(self, instance_id: str) -> Instance:
        self.queries[instance_id] = self.queries.get(instance_id, 0) + 1
        inst = self.instances[instance_id]
        if self.queries[instance_id] >= RUN_PASSES and inst.state == InstanceState.RUNNING:
            inst = self.instances[instance_id] = Instance(
                inst.id, inst.token, inst.job_id, inst.attempt, InstanceState.EXITED, inst.spot,
                launched_at=inst.launched_at, ended_at=time.time(), returncode=0, price_per_hour=0.9)
        return inst

    async def list_instances(self, job_id: str | None = None) -> list[Instance]:
        return [i for i in self.instances.values() if job_id is None or i.job_id == job_id]

    async def terminate(self, instance_id: str) -> None:
        pass

    async def interrupt(self, instance_id: str, lead_s: float | None = None) -> None:
        pass

    def prices(self, instance_type: str | None, zone: str | None) -> tuple[float, float]:
        return 0.9, 3.0


def measure(db_url: str, jobs: int) -> dict:
    from spotrun.controller.db import Database
    from spotrun.controller.reconciler import Reconciler
    from spotrun.controller.repo import count_active, create_job, list_views
    from spotrun.controller.spec import load_spec

    db = Database(db_url)
    spec = load_spec({"run": "true"})
    for _ in range(jobs):
        create_job(db, spec)
    reconciler = Reconciler(db, {"local": InstantProvider()}, exclusive=True)
    passes = []

    async def drive() -> None:
        while True:
            t0 = time.perf_counter()
            await reconciler.run_once()
            await reconciler.settle()  # the pass's launches and ends, which run off the pass
            passes.append(time.perf_counter() - t0)
            if reconciler.passes > RUN_PASSES + 1 and count_active(db) == 0:
                break

    started = time.perf_counter()
    asyncio.run(drive())
    total = time.perf_counter() - started
    unfinished = [v for v in list_views(db) if v["status"] != "SUCCEEDED"]
    assert not unfinished, f"{len(unfinished)} jobs did not succeed, e.g. {unfinished[0]}"
    db.close()
    return {
        "jobs": jobs, "passes": len(passes), "total_s": round(total, 3),
        "median_pass_s": round(statistics.median(passes), 4),
        "per_job_pass_ms": round(1000 * statistics.median(passes) / jobs, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--pg-url", help="also measure on this PostgreSQL server: each run gets a fresh database there, dropped after"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="spotrun-bench-")
    os.environ["SPOTRUN_HOME"] = scratch.name
    results = []
    for backend in ["sqlite"] + (["postgresql"] if args.pg_url else []):
        for n in sorted(args.jobs):
            if backend == "sqlite":
                url, drop = f"sqlite:///{scratch.name}/bench-{n}.db", lambda: None
            else:
                url, drop = _fresh_pg(args.pg_url)
            try:
                results.append({"backend": backend, **measure(url, n)})
            finally:
                drop()
    scratch.cleanup()
    for backend in {r["backend"] for r in results}:
        rows = [r for r in results if r["backend"] == backend]
        base = rows[0]["per_job_pass_ms"]
        for r in rows:
            r["per_job_ratio_vs_smallest"] = round(r["per_job_pass_ms"] / base, 2)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="reconciler pass cost per job (baseline: the smallest job count, same run)")
    for col in ("backend", "jobs", "passes", "total s", "median pass s", "ms/job/pass", "ratio"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(*(str(r[c]) for c in ("backend", "jobs", "passes", "total_s", "median_pass_s",
                                             "per_job_pass_ms", "per_job_ratio_vs_smallest")))
    Console().print(table)


def _fresh_pg(server_url: str) -> tuple[str, Callable[[], None]]:
    """A new database on the server, and how to drop it afterwards."""
    import secrets

    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"spotrun_bench_{secrets.token_hex(4)}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url.set(database=name).render_as_string(hide_password=False), drop


if __name__ == "__main__":
    main()
