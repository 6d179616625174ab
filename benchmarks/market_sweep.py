"""The full market sweep: every bundled availability trace x 300 random starts x every policy.

Reproduces the paper's Table 3 setting (C = 48 h, job fraction 0.8, d = 0.2 h) and times it.
Baseline, measured in the same run: the same sweep one policy at a time in one process; the
timed run is the whole sweep over `--workers` processes (target: under 60 s on 2 cores).

    .venv/bin/python benchmarks/market_sweep.py [--starts 300] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from spotrun.market.policies import ALL
from spotrun.market.policy import JobSpec
from spotrun.market.sim import Market
from spotrun.market.sweep import per_market, run_sweep, summarize
from spotrun.market.trace import bundled, bundled_kind, load_trace

TRAIN = "aws-10-26-2022/"  # the adaptive policy was tuned on these; every other trace is held out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the one-process baseline")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    job = JobSpec(48 * 3600, 60 * 3600, 0.2 * 3600)
    names = [n for n in bundled() if bundled_kind(n) == "availability"]
    markets = [Market.of([load_trace(n)]) for n in names]

    baseline: dict[str, float] = {}
    baseline_cpu = 0.0
    if not args.no_baseline:
        for p in ALL:
            t0, c0 = time.perf_counter(), time.process_time()
            run_sweep(job, markets, [p], args.starts, args.seed, workers=1)
            baseline[p] = time.perf_counter() - t0
            baseline_cpu += time.process_time() - c0
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    results = run_sweep(job, markets, ALL, args.starts, args.seed, workers=args.workers)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _children_cpu() - k0

    report = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "traces": names,
        "runs": len(results),
        "wall_s": wall,
        "cpu_s": cpu,
        "workers": args.workers,
        "baseline_one_process_s": baseline or None,
        "baseline_cpu_s": baseline_cpu if baseline else None,
        "speedup": (sum(baseline.values()) / wall) if baseline else None,
        "table3_2022": summarize([r for r in results if r.market.startswith(TRAIN)], ALL),
        "held_out": summarize([r for r in results if not r.market.startswith(TRAIN)], ALL),
        "all": summarize(results, ALL),
        "per_trace": per_market(results, ALL),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    _print(report)


def _children_cpu() -> float:
    """CPU seconds of finished worker processes: a measure of work that the machine's load does not inflate."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for key, title in (("table3_2022", "Table 3 setting, 2022 traces (tuning set)"),
                       ("held_out", "Held-out traces (2023, 16-node)"), ("all", "All availability traces")):
        t = Table(title=title)
        for col in ("policy", "on-demand h", "spot h", "cost $", "spot vs opt.", "misses"):
            t.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
        for r in report[key]:
            t.add_row(r["policy"], f"{r['on_demand_hours']['mean']:.1f} ± {r['on_demand_hours']['std']:.1f}",
                      f"{r['spot_hours']['mean']:.1f} ± {r['spot_hours']['std']:.1f}", f"{r['cost']['mean']:.2f}",
                      f"{r['spot_vs_optimum']:.0%}", str(r["deadline_misses"]))
        console.print(t)
    t = Table(title="Per trace: spot use vs optimum (cost vs optimum)")
    t.add_column("trace", no_wrap=True)
    policies = [r["policy"] for r in report["all"] if r["policy"] not in ("optimum", "on-demand")]
    for p in policies:
        t.add_column(p, justify="right", no_wrap=True)
    for market, rows in report["per_trace"].items():
        by = {r["policy"]: r for r in rows}
        opt_cost = by["optimum"]["cost"]["mean"]
        t.add_row(market, *(f"{by[p]['spot_vs_optimum']:.0%} ({by[p]['cost']['mean'] / opt_cost:.3f})" for p in policies))
    console.print(t)
    t = Table(title="Time")
    t.add_column("what")
    t.add_column("seconds", justify="right")
    for p, s in (report["baseline_one_process_s"] or {}).items():
        t.add_row(f"baseline, one process: {p}", f"{s:.1f}")
    if report["baseline_one_process_s"]:
        t.add_row("baseline total (wall)", f"{sum(report['baseline_one_process_s'].values()):.1f}")
        t.add_row("baseline total (CPU)", f"{report['baseline_cpu_s']:.1f}")
    t.add_row(f"full sweep, {report['workers']} workers ({report['runs']} runs), wall", f"{report['wall_s']:.1f}")
    t.add_row("full sweep, CPU of all processes", f"{report['cpu_s']:.1f}")
    if report["speedup"]:
        t.add_row("speedup vs baseline", f"{report['speedup']:.2f}x")
    console.print(t)


if __name__ == "__main__":
    main()
