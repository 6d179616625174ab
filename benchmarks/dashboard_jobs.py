"""The dashboard with 10 000 jobs: the jobs page's first screen in Chromium, and the API.

    .venv/bin/python benchmarks/dashboard_jobs.py                # 10 000 jobs vs 10
    .venv/bin/python benchmarks/dashboard_jobs.py --jobs 50000 --json

Two databases are filled with rows (each job with two attempts, the first reclaimed, and their
events, as the controller writes them): the baseline with 10 jobs, the measured one with
`--jobs`. Each runs under its own `spotrun dashboard` child process. First screen: from
`page.goto` to the first job row in the table, in Debian's Chromium driven by Playwright, a fresh
browser context each round (no cache). API: wall time of each endpoint over HTTP. Medians.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ENDPOINTS = ["/api/jobs?limit=50", "/api/jobs?limit=50&state=FAILED", "/api/jobs?limit=50&q=sweep-77",
             "/api/summary", "/api/fleet", "/metrics"]


def fill(url: str, n: int) -> None:
    """`n` finished jobs as the controller would leave them, written in bulk."""
    from sqlalchemy import insert

    from spotrun.controller.db import Database
    from spotrun.controller.models import Attempt, Event, Job
    from spotrun.controller.spec import load_spec

    spec = load_spec({"run": "python train.py"}).model_dump_json()
    now = time.time()
    jobs, attempts, events = [], [], []
    for i in range(n):
        jid, t = secrets.token_hex(4), now - (n - i) * 6.0
        status = "FAILED" if i % 7 == 0 else "SUCCEEDED" if i % 3 else "RUNNING"
        jobs.append(dict(id=jid, name=f"sweep-{i}", spec=spec, provider="local", desired="run", status=status,
                         reclaims=1, errors=0, refusals=0, next_launch_at=0.0, cost=0.02, on_demand_cost=0.07,
                         created_at=t, submitted_at=t, updated_at=t, finished_at=None if status == "RUNNING" else t + 300,
                         lease_expires=0.0))
        for k, (start, end, cause) in enumerate([(t + 2, t + 120, "reclaim"), (t + 125, t + 300, "success")], 1):
            attempts.append(dict(job_id=jid, number=k, token=f"{jid}-{k}", instance_id=f"local-{jid}{k}", spot=True,
                                 zone=f"zone-{i % 3}", instance_type="cpu", price=0.3, on_demand_price=1.0,
                                 created_at=start - 1, started_at=start, ended_at=end, cause=cause, cost=0.01))
        events += [dict(job_id=jid, attempt=1, at=t + 119, kind="notice", message="notice"),
                   dict(job_id=jid, attempt=1, at=t + 120, kind="reclaim", message="reclaimed"),
                   dict(job_id=jid, attempt=2, at=t + 125, kind="launched", message="launched")]
    db = Database(url)
    with db.session() as s:
        for model, rows in ((Job, jobs), (Attempt, attempts), (Event, events)):
            for at in range(0, len(rows), 5000):
                s.execute(insert(model), rows[at:at + 5000])
    db.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SPOTRUN_HOME": str(home), "SPOTRUN_DB_URL": f"sqlite:///{home / 'spotrun.db'}"}
    proc = subprocess.Popen([sys.executable, "-m", "spotrun", "dashboard", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(url + "/api/controller", timeout=5)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the dashboard did not start")


def first_screen(browser, url: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(url + "/")
        page.wait_for_selector("tr[data-job]", state="attached", timeout=60_000)
        times.append(time.perf_counter() - t0)
        context.close()
    return statistics.median(times)


def api_times(url: str, rounds: int) -> dict[str, float]:
    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for path in ENDPOINTS:
            samples = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                client.get(path).raise_for_status()
                samples.append(time.perf_counter() - t0)
            out[path] = statistics.median(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        for label, n in (("baseline", 10), ("measured", args.jobs)):
            home = Path(tmp) / label
            home.mkdir()
            t0 = time.perf_counter()
            fill(f"sqlite:///{home / 'spotrun.db'}", n)
            fill_s = time.perf_counter() - t0
            proc, url = serve(home)
            try:
                first_screen(browser, url, 1)  # warm the server's imports and the SQLite cache
                results[label] = {"jobs": n, "fill_s": fill_s, "first_screen_s": first_screen(browser, url, args.rounds),
                                  "api_s": api_times(url, args.rounds)}
            finally:
                proc.terminate()
                proc.wait()
        browser.close()
    base, big = results["baseline"], results["measured"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'measure':<36} {'10 jobs':>10} {f'{args.jobs} jobs':>12} {'ratio':>7}")
    rows = [("jobs page, first screen", base["first_screen_s"], big["first_screen_s"])]
    rows += [(f"GET {p}", base["api_s"][p], big["api_s"][p]) for p in ENDPOINTS]
    for name, a, b in rows:
        print(f"{name:<36} {a * 1000:>8.0f}ms {b * 1000:>10.0f}ms {b / a:>6.1f}x")
    print(f"target: first screen under 1 s with {args.jobs} jobs: {'met' if big['first_screen_s'] < 1 else 'NOT met'}")


if __name__ == "__main__":
    main()
