"""How late the controller records outcomes: N short jobs on the real local provider.

The controller runs as the daemon does (`spotrun controller run`, 1 s passes, a child process);
every job is `run: true` on a real instance (launcher, agent, command). Measured per job: the
time from its instance's exit (the attempt's end, as the provider recorded it) to the moment
the controller recorded the outcome (the job's `succeeded` event), and the controller's peak
memory. Jobs are submitted while fewer than --live are unfinished, so a 2-core machine runs
1000 of them without holding 1000 instances (and their memory) at once.

Baseline, same run: the smallest job count. To measure another version the same way (e.g. the
commit before a change), put its `src/` first: `PYTHONPATH=/old/checkout/src .venv/bin/python ...`.

    .venv/bin/python benchmarks/controller_latency.py [--jobs 200 1000] [--live 40] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(jobs: int, live: int) -> dict:
    import spotrun
    from spotrun.controller import api, repo
    from spotrun.controller.db import Database
    from spotrun.controller.models import Attempt, Event
    from sqlalchemy import select

    home = tempfile.mkdtemp(prefix="spotrun-lat-")
    os.environ.update(SPOTRUN_HOME=home, SPOTRUN_DB_URL=f"sqlite:///{home}/spotrun.db")
    db = Database()
    controller = subprocess.Popen(
        [sys.executable, "-m", "spotrun", "controller", "run", "--interval", "1s"],
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=open(Path(home) / "controller.err", "wb"),
        start_new_session=True,
    )
    started = time.monotonic()
    submitted: list[str] = []
    try:
        while True:
            active = repo.count_active(db)
            while len(submitted) < jobs and active < live:
                submitted.append(api.launch({"run": "true"}, start_controller=False).id)
                active += 1
            if len(submitted) == jobs and active == 0:
                break
            if controller.poll() is not None:
                raise RuntimeError(f"the controller exited; see {home}/controller.err")
            time.sleep(0.2)
        total = time.monotonic() - started
        rss = _peak_rss_mb(controller.pid)
    finally:
        controller.send_signal(signal.SIGTERM)
        controller.wait(60)
    with db.session() as s:
        ended = {job: at for job, at in s.execute(select(Attempt.job_id, Attempt.ended_at).where(Attempt.cause == "success"))}
        recorded = {job: at for job, at in s.execute(select(Event.job_id, Event.at).where(Event.kind == "succeeded"))}
    views = repo.list_views(db)
    db.close()
    shutil.rmtree(home, ignore_errors=True)
    failed = [v for v in views if v["status"] != "SUCCEEDED"]
    assert not failed, f"{len(failed)} jobs did not succeed, e.g. {failed[0]}"
    lags = sorted(recorded[j] - ended[j] for j in submitted)
    return {
        "code": str(Path(spotrun.__file__).parent.parent), "jobs": jobs, "live": live, "total_s": round(total, 1),
        "lag_median_s": round(statistics.median(lags), 2),
        "lag_p95_s": round(lags[int(0.95 * (len(lags) - 1))], 2), "lag_max_s": round(lags[-1], 2),
        "controller_peak_rss_mb": round(rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--live", type=int, default=40, help="at most this many unfinished jobs at once")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [measure(n, args.live) for n in sorted(args.jobs)]
    for r in results:
        r["median_ratio_vs_smallest"] = round(r["lag_median_s"] / max(results[0]["lag_median_s"], 1e-3), 2)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="instance exit -> recorded outcome (baseline: the smallest job count, same run)")
    cols = ("code", "jobs", "total_s", "lag_median_s", "lag_p95_s", "lag_max_s", "median_ratio_vs_smallest", "controller_peak_rss_mb")
    for col in cols:
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(*(str(r[c]) for c in cols))
    Console().print(table)


if __name__ == "__main__":
    main()
