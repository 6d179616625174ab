"""`spotrun jobs` with 10 000 jobs on SQLite, against 10: a page, filters, every job.

    .venv/bin/python benchmarks/jobs_list.py                 # 10 000 jobs vs 10
    .venv/bin/python benchmarks/jobs_list.py --jobs 50000 --json

Two SQLite databases are filled as the dashboard benchmark fills them (each job with two
attempts and three events; `benchmarks/dashboard_jobs.py`). Measured in process, medians of
`--rounds`: `repo.jobs_page` for the default page (100), a filtered page (FAILED), the page after
the middle job (`--after`), and every job; and, for comparison, every job the way `spotrun jobs`
read them before paging (one attempts query per job). Then the CLI itself, `spotrun jobs` (one
page, a table) and `spotrun jobs --limit 0 --json`, as child processes (Python's start included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from dashboard_jobs import fill  # noqa: E402  one way to fill a database, shared by both benchmarks


def _median(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(home: Path, n: int, rounds: int) -> dict[str, float]:
    from sqlalchemy import select

    from spotrun.controller import repo
    from spotrun.controller.db import Database
    from spotrun.controller.models import Job

    url = f"sqlite:///{home / 'spotrun.db'}"
    fill(url, n)
    db = Database(url)
    with db.session() as s:
        ids = list(s.scalars(select(Job.id).order_by(Job.created_at, Job.id)))

    def one_query_per_job() -> None:
        with db.session() as s:
            [repo.job_view(s, j) for j in s.scalars(select(Job).order_by(Job.created_at))]

    found = {
        "page_s": _median(lambda: repo.jobs_page(db, limit=100), rounds),
        "failed_page_s": _median(lambda: repo.jobs_page(db, states=["FAILED"], limit=100), rounds),
        "after_middle_s": _median(lambda: repo.jobs_page(db, after=ids[len(ids) // 2], limit=100), rounds),
        "all_s": _median(lambda: repo.list_views(db), rounds),
        "all_one_query_per_job_s": _median(one_query_per_job, rounds),
    }
    db.close()
    env = {**os.environ, "SPOTRUN_HOME": str(home), "SPOTRUN_DB_URL": url, "COLUMNS": "160"}
    for key, args in (("cli_page_s", []), ("cli_all_json_s", ["--limit", "0", "--json"])):
        found[key] = _median(lambda: subprocess.run([sys.executable, "-m", "spotrun", "jobs", *args], env=env,
                                                    stdout=subprocess.DEVNULL, check=True), max(1, rounds // 2))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        base = measure(Path(a), 10, args.rounds)
        big = measure(Path(b), args.jobs, args.rounds)
    report = {"jobs": args.jobs, "baseline_jobs": 10, "backend": "sqlite", "baseline": base, "measured": big,
              "ratio": {k: round(big[k] / base[k], 2) for k in big}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'':26s} {'10 jobs':>10s} {args.jobs:>8,d} jobs {'ratio':>7s}")
    for k in big:
        print(f"{k:26s} {base[k] * 1000:8.1f}ms {big[k] * 1000:10.1f}ms {report['ratio'][k]:7.2f}")


if __name__ == "__main__":
    main()
