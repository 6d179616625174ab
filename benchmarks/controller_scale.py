"""How the controller scales with the fleet: one asyncio process for 10 000 jobs, and several
controllers sharing one PostgreSQL database.

The real Reconciler and database (SQLite file; PostgreSQL with --pg-url) drive N jobs on the
`sim` provider in wall time: instances are in memory, boot at once and run until the market
reclaims them, each at the reclaim rate of a real availability trace (times --speedup, so a
short run sees enough reclaims), after the cloud's notice lead. What is timed is the
controller's own work: its passes, its queries, how soon a reclaim gets its relaunch.

Per fleet size and backend, after every job first runs, over --seconds of steady operation:
  pass_s_median / pass_s_p99   a pass's wall time (the pass never waits on launches)
  outcome_lag_s_p99           reclaim (the instance gone) -> its relaunch requested
  queries_per_pass            SQL statements a pass makes itself (median; counted by a
                              SQLAlchemy listener), and queries_per_pass_max
  rss_mb, kb_per_job          the process's resident memory, and its growth per job from
                              before the controller started (the sim fleet included)
Baseline in the same run: the smallest fleet; `*_ratio_vs_smallest` near 1.0 means flat.

--controllers 3 (PostgreSQL): three controller processes share the fleet (the sim provider
served to them from this process, so instances outlive a controller as on a cloud); one is
SIGKILLed and the benchmark reports how long until its jobs are held by the others, how soon
its reclaimed jobs are relaunched, and whether any job ever had two live instances at once.

    .venv/bin/python benchmarks/controller_scale.py --provider sim --jobs 1000 10000 [--pg-url URL] [--json]
    .venv/bin/python benchmarks/controller_scale.py --provider sim --jobs 1000 --pg-url URL --controllers 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.managers import BaseManager
from typing import Any

from spotrun.providers.base import ENDED, Instance, InstanceState, LaunchRequest

TRACE = "aws-04-22-2023/us-east-1c_v100_1"  # a preemption trace: 0.74 reclaims per instance-hour


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98] if len(xs) >= 2 else (xs[0] if xs else 0.0)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def sim_provider(speedup: float, seed: int = 1) -> Any:
    """The sim provider with each instance reclaimed at the trace's rate x `speedup`."""
    from spotrun.market.trace import load_trace
    from spotrun.providers.sim import SimConfig, SimProvider

    per_hour = load_trace(TRACE).reclaims_per_hour() * speedup
    return SimProvider(SimConfig.from_dict({"mean_lifetime": f"{3600 / per_hour:.3f}s", "lead": "2s", "seed": seed}))


class Watched:
    """The provider, watched from outside the controller: when each reclaimed job's relaunch
    was requested, and whether a job ever had two live instances at once (driven twice)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name
        self.last: dict[str, str] = {}  # job -> its newest instance
        self.relaunch_lags: list[tuple[str, float, float]] = []  # (job, reclaimed at, seconds to its relaunch)
        self.twice: list[str] = []
        self.own_queries = 0  # its own look at a job's last instance, not the controller's


    async def launch(self, request: LaunchRequest) -> Instance:
        prev_id = self.last.get(request.job_id)
        prev = None
        if prev_id:
            self.own_queries += 1
            prev = await self.inner.query(prev_id)
        inst = await self.inner.launch(request)
        if prev is not None and prev.token != request.token:
            if prev.state not in ENDED:
                self.twice.append(request.job_id)
            elif prev.state == InstanceState.RECLAIMED and prev.ended_at is not None:
                self.relaunch_lags.append((request.job_id, prev.ended_at, time.time() - prev.ended_at))
        self.last[request.job_id] = inst.id
        return inst

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def create_jobs(db: Any, n: int) -> None:
    """N sim jobs in one transaction (a sweep's submission, not what is measured)."""
    from spotrun.controller import repo
    from spotrun.controller.spec import load_spec

    spec = load_spec({"run": "simulated", "resources": {"cloud": "sim"}, "recovery": {"max_reclaims": 1_000_000}})
    repo.create_jobs(db, [spec] * n)


class QueryCounter:
    """SQL statements by the asyncio task that made them: a pass's own, apart from its actions'."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.by_task: Counter[int] = Counter()
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_: Any) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        self.by_task[id(task)] += 1


def measure(db_url: str, jobs: int, seconds: float, interval: float, speedup: float) -> dict:
    from spotrun.controller import repo
    from spotrun.controller.db import Database
    from spotrun.controller.reconciler import Reconciler

    db = Database(db_url)
    t0 = time.perf_counter()
    create_jobs(db, jobs)
    submit_s = time.perf_counter() - t0
    provider = Watched(sim_provider(speedup))
    rss_before = rss_mb()
    reconciler = Reconciler(db, {"sim": provider}, interval=interval, exclusive=db.is_sqlite, max_actions=256)
    counter = QueryCounter(db.engine)
    passes: list[float] = []
    queries: list[int] = []
    measured_from = 0.0

    async def drive() -> float:
        me = id(asyncio.current_task())
        started = time.perf_counter()
        while sum(1 for _ in (await provider.inner.list_instances())) < jobs:  # every job launched once
            await reconciler.run_once()
            await asyncio.sleep(0)
        startup = time.perf_counter() - started
        nonlocal measured_from
        measured_from = time.time()  # reclaims from here: a startup burst's backlog is not steady state
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            before = counter.by_task[me]
            t = time.perf_counter()
            await reconciler.run_once()
            passes.append(time.perf_counter() - t)
            queries.append(counter.by_task[me] - before)
            await asyncio.sleep(max(0.0, interval - passes[-1]))
        await reconciler.settle()
        return startup

    startup_s = asyncio.run(drive())
    active = repo.count_active(db)
    db.close()
    assert active == jobs, f"{jobs - active} jobs ended; they should run until stopped"
    assert not provider.twice, f"jobs with two live instances: {provider.twice[:5]}"
    lags = [lag for _, at, lag in provider.relaunch_lags if at >= measured_from]
    rss = rss_mb()
    return {
        "jobs": jobs, "passes": len(passes), "submit_s": round(submit_s, 2), "startup_s": round(startup_s, 2),
        "pass_s_median": round(statistics.median(passes), 4), "pass_s_p99": round(p99(passes), 4),
        "reclaims": len(lags), "outcome_lag_s_median": round(statistics.median(lags), 3) if lags else None,
        "outcome_lag_s_p99": round(p99(lags), 3) if lags else None,
        "queries_per_pass": statistics.median(queries), "queries_per_pass_max": max(queries),
        "provider_calls_per_pass": {k: round(v / max(1, reconciler.passes), 2)
                                    for k, v in (provider.inner.calls - Counter(query=provider.own_queries)).items()},
        "rss_mb": round(rss, 1), "kb_per_job": round(1024 * (rss - rss_before) / jobs, 1),
    }


# --- three controllers, one SIGKILLed --------------------------------------------------------


class FleetServer(BaseManager):
    pass


class Fleet:
    """The sim provider behind a lock, served to controller processes: the cloud outlives them."""

    def __init__(self, speedup: float) -> None:
        self.watched = Watched(sim_provider(speedup))
        self.lock = threading.Lock()

    def call(self, method: str, *args: Any) -> Any:
        with self.lock:
            result = getattr(self.watched, method)(*args)
            return asyncio.run(result) if asyncio.iscoroutine(result) else result

    def report(self) -> dict:
        with self.lock:
            return {"relaunch_lags": list(self.watched.relaunch_lags), "twice": list(self.watched.twice)}


class RemoteFleet:
    """A controller's provider: every call goes to the benchmark's one fleet."""

    name = "sim"

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    async def _call(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.proxy.call, method, *args)

    async def launch(self, request: LaunchRequest) -> Instance:
        return await self._call("launch", request)

    async def query(self, instance_id: str) -> Instance:
        return await self._call("query", instance_id)

    async def list_instances(self, job_id: str | None = None) -> list[Instance]:
        return await self._call("list_instances", job_id)

    async def terminate(self, instance_id: str) -> None:
        await self._call("terminate", instance_id)

    async def interrupt(self, instance_id: str, lead_s: float | None = None) -> None:
        await self._call("interrupt", instance_id, lead_s)

    def prices(self, instance_type: str | None, zone: str | None) -> tuple[float, float]:
        return self.proxy.call("prices", instance_type, zone)


def child(db_url: str, address: str, authkey: str, interval: float, lease_s: float) -> None:
    """One controller process (what `spotrun controller run` does, on the shared fleet)."""
    from spotrun.controller.db import Database
    from spotrun.controller.reconciler import Reconciler

    FleetServer.register("fleet")
    host, port = address.rsplit(":", 1)
    manager = FleetServer(address=(host, int(port)), authkey=bytes.fromhex(authkey))
    manager.connect()
    reconciler = Reconciler(Database(db_url), {"sim": RemoteFleet(manager.fleet())}, interval=interval,
                            lease_s=lease_s, max_actions=256)

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await reconciler.run(stop)

    asyncio.run(serve())


def three_controllers(db_url: str, jobs: int, seconds: float, interval: float, lease_s: float, speedup: float) -> dict:
    from sqlalchemy import func, select

    from spotrun.controller.db import Database
    from spotrun.controller.models import ACTIVE, Attempt, Job

    db = Database(db_url)
    create_jobs(db, jobs)
    fleet = Fleet(speedup)
    FleetServer.register("fleet", callable=lambda: fleet)
    authkey = secrets.token_bytes(16)
    server = FleetServer(address=("127.0.0.1", 0), authkey=authkey).get_server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.address[1]}"
    procs = [subprocess.Popen([sys.executable, __file__, "--child", db_url, address, authkey.hex(), str(interval), str(lease_s)])
             for _ in range(3)]

    def owners() -> Counter:
        with db.session() as s:
            return Counter(dict(s.execute(select(Job.lease_owner, func.count()).where(Job.status.in_(ACTIVE))
                                          .group_by(Job.lease_owner)).all()))

    def wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: owners {dict(owners())}")
            time.sleep(0.05)

    try:
        wait(lambda: len(fleet.watched.last) == jobs and len(owners()) == 3 and None not in owners(), 300,
             "every job launched and spread over the three controllers")
        time.sleep(seconds / 2)
        spread = dict(owners())
        victim = f"{socket.gethostname()}:{procs[0].pid}"
        with db.session() as s:
            orphans = set(s.scalars(select(Job.id).where(Job.lease_owner == victim, Job.status.in_(ACTIVE))))
        procs[0].send_signal(signal.SIGKILL)
        killed_at = time.time()
        procs[0].wait()
        wait(lambda: victim not in owners() and None not in owners(), 10 * lease_s, "the killed controller's jobs to move")
        handover_s = time.time() - killed_at
        time.sleep(seconds / 2)
        report = fleet.report()
        # The killed controller's jobs reclaimed after it died: how soon the others relaunched them.
        after = [lag for job, at, lag in report["relaunch_lags"] if job in orphans and at >= killed_at]
        with db.session() as s:
            open_twice = s.scalar(select(func.count()).select_from(
                select(Attempt.job_id).where(Attempt.ended_at.is_(None)).group_by(Attempt.job_id)
                .having(func.count() > 1).subquery()))
        return {
            "jobs": jobs, "backend": "postgresql", "controllers": 3, "lease_s": lease_s, "spread": sorted(spread.values()),
            "killed_held": len(orphans), "handover_s": round(handover_s, 2),
            "relaunches_after_kill": len(after), "outcome_lag_s_p99": round(p99(after), 3) if after else None,
            "jobs_driven_twice": len(set(report["twice"])), "jobs_with_two_open_attempts": open_twice,
        }
    finally:
        for p in procs[1:]:
            p.terminate()
        for p in procs:
            p.wait(60)
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", choices=["sim"], default="sim", help="the provider the jobs run on (sim: in memory)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--pg-url", help="also measure on this PostgreSQL server: each run gets a fresh database there, dropped after")
    parser.add_argument("--seconds", type=float, default=30.0, help="steady operation measured per run (default 30)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes (the controller's default: 1)")
    parser.add_argument("--speedup", type=float, default=20.0,
                        help=f"reclaims at {TRACE}'s rate times this, for enough reclaims in a short run (default 20)")
    parser.add_argument("--controllers", type=int, choices=[1, 3], default=1,
                        help="3: three controllers on PostgreSQL, one SIGKILLed halfway (needs --pg-url)")
    parser.add_argument("--lease", type=float, default=5.0, help="--controllers 3: the controllers' lease in seconds")
    parser.add_argument("--json", action="store_true")
    if sys.argv[1:2] == ["--child"]:
        url, address, key, interval, lease = sys.argv[2:7]
        child(url, address, key, float(interval), float(lease))
        return
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="spotrun-bench-")
    os.environ["SPOTRUN_HOME"] = scratch.name
    results = []
    if args.controllers == 3:
        if not args.pg_url:
            parser.error("--controllers 3 needs --pg-url: several controllers share a PostgreSQL database")
        for n in args.jobs:
            url, drop = _fresh_pg(args.pg_url)
            try:
                results.append(three_controllers(url, n, args.seconds, args.interval, args.lease, args.speedup))
            finally:
                drop()
    else:
        for backend in ["sqlite"] + (["postgresql"] if args.pg_url else []):
            for n in sorted(args.jobs):
                if backend == "sqlite":
                    url, drop = f"sqlite:///{scratch.name}/bench-{n}.db", lambda: None
                else:
                    url, drop = _fresh_pg(args.pg_url)
                try:
                    results.append({"backend": backend, **measure(url, n, args.seconds, args.interval, args.speedup)})
                finally:
                    drop()
        for backend in {r["backend"] for r in results}:
            rows = [r for r in results if r["backend"] == backend]
            for r in rows:
                r["pass_ratio_vs_smallest"] = round(r["pass_s_median"] / rows[0]["pass_s_median"], 2)
                r["queries_ratio_vs_smallest"] = round(r["queries_per_pass"] / rows[0]["queries_per_pass"], 2)
    scratch.cleanup()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"controller at scale (sim provider, reclaims at {TRACE} x{args.speedup:g})")
    cols = list(dict.fromkeys(k for r in results for k in r if not isinstance(r[k], (dict, list))))
    for col in cols:
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(*(str(r.get(c, "")) for c in cols))
    Console().print(table)


def _fresh_pg(server_url: str) -> tuple[str, Callable[[], None]]:
    """A new database on the server, and how to drop it afterwards."""
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
