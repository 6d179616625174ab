"""The full market sweep: every bundled availability trace x 300 random starts x every policy.

Reproduces the paper's Table 3 setting (C = 48 h, job fraction 0.8, d = 0.2 h) and times it.
Baseline, measured in the same run: the same sweep one policy at a time in one process; the
timed run is the whole sweep over `--workers` processes (target: under 60 s on 2 cores).

`--fine` times the sweep on the fine-grained traces (30- and 32-second ticks), the optimum
with the tick solver (the baseline, as before) against the default choice (the segment one).
`--zones` compares multi-zone markets with their best zone run alone (cost, launches);
`--zone-subsets` does the same for sub-markets of the five 2023 zones and three jobs.
`--synthetic N` runs adaptive against UP on N random markets of the property test's generator
(seeds `--seed`..`--seed`+N-1: 0-95 were tuned on, later seeds never were).
`--gang-pair` runs a two-market 16-node set-up: two stretches of the bundled 16-node trace,
hours apart (a stand-in for the evaluation's two-market 16-node case, which we do not have).
`--grid` runs the stress grid: d in {0.05, 0.5} h x job fraction in {0.5, 0.95} x C in
{8, 100} h on every bundled trace long enough for the cell, adaptive's mean cost against UP's
and both policies' spot use against the optimum's.

    .venv/bin/python benchmarks/market_sweep.py [--starts 300] [--workers 2] [--json]
    .venv/bin/python benchmarks/market_sweep.py --fine [--starts 300]
    .venv/bin/python benchmarks/market_sweep.py --grid [--starts 20]
    .venv/bin/python benchmarks/market_sweep.py --zones [--starts 30]
    .venv/bin/python benchmarks/market_sweep.py --zone-subsets [--starts 100] [--seed 2]
    PYTHONPATH=. .venv/bin/python benchmarks/market_sweep.py --synthetic 48 [--starts 12] [--seed 96]
    .venv/bin/python benchmarks/market_sweep.py --gang-pair [--starts 150]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from spotrun.market.policies import ALL
from spotrun.market.policies.optimum import solve
from spotrun.market.policy import JobSpec
from spotrun.market.sim import Market
from spotrun.market.sweep import _run, per_market, run_sweep, summarize
from spotrun.market.trace import bundled, bundled_kind, load_trace, resolve

TRAIN = "aws-10-26-2022/"  # the adaptive policy was tuned on these; every other trace is held out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the one-process baseline")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fine", action="store_true", help="time the sweep on the 30-s traces, tick solver vs default")
    ap.add_argument("--grid", action="store_true", help="the stress grid (d x job fraction x C), adaptive vs UP")
    ap.add_argument("--zones", action="store_true", help="multi-zone markets against their best single zone")
    ap.add_argument("--zone-subsets", action="store_true", help="sub-markets of the 2023 zones against their best zone")
    ap.add_argument("--synthetic", type=int, default=0, metavar="N",
                    help="adaptive vs UP on N random synthetic markets (the property test's generator), seeds from --seed")
    ap.add_argument("--gang-pair", action="store_true", help="two 16-node markets (two stretches of the gang trace, hours apart)")
    ap.add_argument("--solver-starts", type=int, default=30, help="--fine: starts per trace for the optimum-alone timing")
    ap.add_argument("--no-sweep", action="store_true", help="--fine: time only the optimum alone")
    args = ap.parse_args()
    if args.fine:
        return _out(fine(args.starts, args.workers, args.seed, args.solver_starts, not args.no_sweep), args.json)
    if args.grid:
        return _out(grid(args.starts, args.workers, args.seed), args.json)
    if args.zones:
        return _out(zones(args.starts, args.seed), args.json)
    if args.zone_subsets:
        return _out(zone_subsets(args.starts, args.seed, args.workers), args.json)
    if args.synthetic:
        return _out(synthetic_markets(args.synthetic, args.starts, args.workers, args.seed), args.json)
    if args.gang_pair:
        return _out(gang_pair(args.starts, args.seed, args.workers), args.json)

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


def _out(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    for title, rows in report["tables"].items():
        t = Table(title=title)
        for col in rows[0]:
            t.add_column(col, justify="left" if col in ("trace", "what") else "right", no_wrap=True)
        for r in rows:
            t.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()))
        Console().print(t)


def _timed(job: JobSpec, markets: list[Market], starts: int, seed: int, workers: int, solver: str | None):
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    results = run_sweep(job, markets, ALL, starts, seed, workers=workers, solver=solver)
    return results, time.perf_counter() - t0, time.process_time() - c0 + _children_cpu() - k0


def fine(starts: int, workers: int, seed: int, before_starts: int = 30, sweep: bool = True) -> dict:
    """The full sweep on the 30/32-second traces, and the optimum alone by each solver.

    The tick solver (the only one before issue 16) takes minutes per trace here, so it is
    timed on `before_starts` starts, beside the default solver on the same starts; its time
    grows linearly with the starts (one vectorised pass per start tick column).
    """
    rows = []
    fine_names = [n for n in bundled() if load_trace(n).gap_s <= 60]
    setups = [("paper set-up, C = 48 h, d = 0.2 h (the two 32-s traces; the 30-s ones are 45 h long)",
               JobSpec(48 * 3600, 60 * 3600, 720), [n for n in fine_names if load_trace(n).hours >= 60]),
              ("C = 24 h, D = 30 h, d = 0.2 h (all four)", JobSpec(24 * 3600, 30 * 3600, 720), fine_names)]
    for label, job, names in setups:
        markets = [Market.of([load_trace(n)]) for n in names]
        if sweep:
            results, wall, cpu = _timed(job, markets, starts, seed, workers, None)
            rows.append({"what": f"{label}: full sweep, all policies, {starts} starts", "traces": len(names),
                         "wall s": wall, "CPU s": cpu})
        for solver in ("tick", "segment"):
            c0 = time.process_time()
            for i, m in enumerate(markets):
                solve(job, m, m.random_starts(job, before_starts, seed + i), solver)
            cpu = time.process_time() - c0
            rows.append({"what": f"{label}: optimum alone by the {solver} solver, {before_starts} starts per trace",
                         "traces": len(names), "wall s": float("nan"), "CPU s": cpu})
    return {"command": " ".join([".venv/bin/python", *sys.argv]), "tables": {"Sweep on fine-grained traces": rows}}


def grid(starts: int, workers: int, seed: int) -> dict:
    """Adaptive against UP (cost) and both against the optimum (spot use) in every stress cell."""
    from concurrent.futures import ProcessPoolExecutor

    cells = [(n, d, f, c) for n in bundled() for d in (0.05, 0.5) for f in (0.5, 0.95) for c in (8, 100)]
    with ProcessPoolExecutor(workers) as pool:
        rows = [r for r in pool.map(_grid_cell, cells, [starts] * len(cells), [seed] * len(cells)) if r]
    summary = [{"what": "cells", "value": len(rows)},
               {"what": "cells where adaptive costs > UP + 0.5 % (the stated noise)",
                "value": sum(r["adaptive / UP cost"] > 1.005 for r in rows)},
               {"what": "cells where adaptive costs > UP + 0.05 %", "value": sum(r["adaptive / UP cost"] > 1.0005 for r in rows)},
               {"what": "worst cell, adaptive / UP cost", "value": max(r["adaptive / UP cost"] for r in rows)},
               {"what": "mean over cells, adaptive / UP cost", "value": float(np.mean([r["adaptive / UP cost"] for r in rows]))},
               {"what": "starts where adaptive costs more than UP", "value": sum(r["starts > UP"] for r in rows)},
               {"what": "starts", "value": sum(r["starts"] for r in rows)},
               {"what": "deadline misses (adaptive)", "value": sum(r["misses"] for r in rows)}]
    return {"command": " ".join([".venv/bin/python", *sys.argv]),
            "tables": {"Stress grid: adaptive vs UP (cost) and vs the optimum (spot use)": rows, "Summary": summary}}


def zones(starts: int, seed: int) -> dict:
    """UP, adaptive and the optimum on multi-zone markets, and adaptive on each zone alone, from the same starts.

    Launches per job (every new instance: first start, relaunch after a reclaim, zone hop,
    spot/on-demand switch) are reported beside the optimum's.
    """
    rows = []
    for spec, job in (("aws-02-15-2023/*", JobSpec(48 * 3600, 60 * 3600, 720)),
                      ("aws-02-15-2023/*", JobSpec(24 * 3600, 24 * 3600 / 0.95, 1800)),
                      ("aws-10-26-2022/us-west-2*_v100_1", JobSpec(24 * 3600, 30 * 3600, 1800))):
        traces = resolve([spec])
        market = Market.of(traces)
        ticks = market.random_starts(job, starts, seed)
        row = {"market": spec, "C h": job.compute_s / 3600, "D h": round(job.deadline_s / 3600, 2),
               "d s": job.changeover_s}
        for p in ("up", "adaptive", "optimum"):
            runs = _run(job, market, p, ticks)
            row[f"{p} $"] = float(np.mean([r.cost for r in runs]))
            row[f"{p} launches"] = float(np.mean([r.changeovers for r in runs]))
            row[f"{p} misses"] = sum(not r.met_deadline for r in runs)
        alone = {t.name: _run(job, Market.of([t]), "adaptive", ticks) for t in traces}
        best = min(alone, key=lambda n: np.mean([r.cost for r in alone[n]]))
        row["best zone alone"] = best
        row["its $"] = float(np.mean([r.cost for r in alone[best]]))
        row["its launches"] = float(np.mean([r.changeovers for r in alone[best]]))
        row["market / best zone"] = row["adaptive $"] / row["its $"]
        rows.append(row)
    return {"command": " ".join([".venv/bin/python", *sys.argv]), "tables": {"Multi-zone": rows}}


SUBSETS = [(0, 4), (0, 1), (1, 2), (0, 1, 2), (2, 3), (0, 3), (1, 4), (0, 1, 2, 3, 4)]
SUBSET_JOBS = {"paper set-up": (48, 60, 720), "C 24 h, D 30 h, d 0.5 h": (24, 30, 1800),
               "C 24 h, C/D 0.95, d 0.5 h": (24, 24 / 0.95, 1800)}


def zone_subsets(starts: int, seed: int, workers: int) -> dict:
    """Adaptive on sub-markets of the five 2023 zones against UP there and the best of their zones alone."""
    from concurrent.futures import ProcessPoolExecutor

    cells = [(z, j) for z in SUBSETS for j in SUBSET_JOBS]
    with ProcessPoolExecutor(workers) as pool:
        rows = list(pool.map(_subset_cell, cells, [starts] * len(cells), [seed] * len(cells)))
    summary = [{"what": "markets x jobs", "value": len(rows)},
               {"what": "worst adaptive / best zone alone", "value": max(r["adaptive / best zone"] for r in rows)},
               {"what": "cells where adaptive costs > best zone alone + 0.5 %",
                "value": sum(r["adaptive / best zone"] > 1.005 for r in rows)},
               {"what": "worst adaptive / UP", "value": max(r["adaptive / UP"] for r in rows)},
               {"what": "deadline misses (adaptive)", "value": sum(r["misses"] for r in rows)}]
    return {"command": " ".join([".venv/bin/python", *sys.argv]),
            "tables": {"Sub-markets of the 2023 zones": rows, "Summary": summary}}


def _subset_cell(cell: tuple[tuple[int, ...], str], starts: int, seed: int) -> dict:
    combo, label = cell
    c, dl, d = SUBSET_JOBS[label]
    job = JobSpec(c * 3600, dl * 3600, d)
    traces = [resolve(["aws-02-15-2023/*"])[i] for i in combo]
    market = Market.of(traces)
    ticks = market.random_starts(job, starts, seed)
    ad = _run(job, market, "adaptive", ticks)
    alone = min(mean(_run(job, Market.of([t]), "adaptive", ticks)) for t in traces)
    return {"zones": " + ".join(t.name.split("/")[-1].split("_")[0] for t in traces), "job": label,
            "adaptive / best zone": mean(ad) / alone, "adaptive / UP": mean(ad) / mean(_run(job, market, "up", ticks)),
            "launches": float(np.mean([r.changeovers for r in ad])), "misses": sum(not r.met_deadline for r in ad)}


def mean(runs: list) -> float:
    return float(np.mean([r.cost for r in runs]))


def synthetic_markets(n: int, starts: int, workers: int, first: int = 0) -> dict:
    """Adaptive against UP on `n` random markets from the property test's generator (seeds first..first+n-1)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        rows = list(pool.map(_synthetic_one, range(first, first + n), [starts] * n))
    ratios = [r["adaptive / UP cost"] for r in rows]
    summary = [{"what": "markets", "value": n},
               {"what": "markets where adaptive costs > UP + 0.5 %", "value": sum(x > 1.005 for x in ratios)},
               {"what": "worst market, adaptive / UP cost", "value": max(ratios)},
               {"what": "mean over markets, adaptive / UP cost", "value": float(np.mean(ratios))},
               {"what": "starts where adaptive costs more than UP", "value": sum(r["starts > UP"] for r in rows)},
               {"what": "starts", "value": n * starts},
               {"what": "deadline misses (adaptive)", "value": sum(r["misses"] for r in rows)}]
    return {"command": " ".join([".venv/bin/python", *sys.argv]),
            "tables": {"Synthetic markets: adaptive vs UP": rows, "Summary": summary}}


def _synthetic_one(seed: int, starts: int) -> dict:
    from tests.market.helpers import random_market

    job, market = random_market(seed)
    ticks = market.random_starts(job, starts, seed)
    up, ad = (_run(job, market, p, ticks) for p in ("up", "adaptive"))
    return {"seed": seed, "zones": market.zones, "tick s": market.gap_s, "d s": job.changeover_s,
            "C h": job.compute_s / 3600, "C/D": round(job.compute_s / job.deadline_s, 2),
            "adaptive / UP cost": float(np.mean([r.cost for r in ad]) / np.mean([r.cost for r in up])),
            "starts > UP": sum(a.cost > u.cost + 1e-6 for a, u in zip(ad, up)),
            "misses": sum(not r.met_deadline for r in ad)}


GANG_SHIFTS_H = (42, 83, 125, 167, 208, 250)  # hours between the two stretches of the gang trace
GANG_JOBS = {"C 48 h, D 60 h, d 0.2 h": (48, 60, 720), "C 48 h, D 60 h, d 0.5 h": (48, 60, 1800),
             "C 24 h, D 30 h, d 0.5 h": (24, 30, 1800)}


def gang_pair(starts: int, seed: int, workers: int) -> dict:
    """Two 16-node markets: two stretches of the bundled gang trace, hours apart, per distance and job.

    A stand-in for the evaluation's two-market 16-node case: each market has the real gang's
    runs and gaps, and the two are not in step. Cost against UP, spot use against the
    optimum's, and launches per job (UP, adaptive, the optimum).
    """
    from concurrent.futures import ProcessPoolExecutor

    cells = [(h, j) for h in GANG_SHIFTS_H for j in GANG_JOBS]
    with ProcessPoolExecutor(workers) as pool:
        rows = list(pool.map(_gang_cell, cells, [starts] * len(cells), [seed] * len(cells)))
    summary = [{"what": "markets x jobs", "value": len(rows)},
               {"what": "worst adaptive / UP cost", "value": max(r["adaptive / UP cost"] for r in rows)},
               {"what": "mean adaptive / UP cost", "value": float(np.mean([r["adaptive / UP cost"] for r in rows]))},
               {"what": "mean spot use vs optimum, UP", "value": float(np.mean([r["UP spot vs opt."] for r in rows]))},
               {"what": "mean spot use vs optimum, adaptive",
                "value": float(np.mean([r["adaptive spot vs opt."] for r in rows]))},
               {"what": "deadline misses (adaptive)", "value": sum(r["misses"] for r in rows)}]
    return {"command": " ".join([".venv/bin/python", *sys.argv]),
            "tables": {"Two 16-node markets (two stretches of the gang trace)": rows, "Summary": summary}}


def _gang_cell(cell: tuple[int, str], starts: int, seed: int) -> dict:
    from spotrun.market.trace import Trace

    hours, label = cell
    c, dl, d = GANG_JOBS[label]
    job = JobSpec(c * 3600, dl * 3600, d)
    gang = resolve(["aws-08-27-2023/*"])[0]
    k = round(hours * 3600 / gang.gap_s)  # two stretches of the trace, k ticks apart: both continuous, no wrap
    market = Market.of([Trace(gang.name, gang.gap_s, gang.available[k:]),
                        Trace(f"{gang.name}-{hours}h", gang.gap_s, gang.available[:-k])])
    ticks = market.random_starts(job, starts, seed)
    by = {p: _run(job, market, p, ticks) for p in ("up", "adaptive", "optimum")}
    opt_spot = float(np.mean([r.spot_hours for r in by["optimum"]])) or float("nan")
    return {"shift h": hours, "job": label, "adaptive / UP cost": mean(by["adaptive"]) / mean(by["up"]),
            "UP spot vs opt.": float(np.mean([r.spot_hours for r in by["up"]])) / opt_spot,
            "adaptive spot vs opt.": float(np.mean([r.spot_hours for r in by["adaptive"]])) / opt_spot,
            "launches UP / adaptive / opt.": " / ".join(f"{np.mean([r.changeovers for r in by[p]]):.1f}"
                                                       for p in ("up", "adaptive", "optimum")),
            "misses": sum(not r.met_deadline for r in by["adaptive"])}


def _grid_cell(cell: tuple[str, float, float, int], starts: int, seed: int) -> dict | None:
    name, d, f, c = cell
    try:
        job = JobSpec(c * 3600, c * 3600 / f, d * 3600)
        market = Market.of([load_trace(name)])
        ticks = market.random_starts(job, starts, seed)
    except ValueError:  # the trace is shorter than the deadline, or d does not fit the deadline
        return None
    by = {p: _run(job, market, p, ticks) for p in ("up", "adaptive", "optimum")}
    opt_spot = float(np.mean([r.spot_hours for r in by["optimum"]])) or float("nan")
    up, ad = by["up"], by["adaptive"]
    return {"trace": name, "d h": d, "C/D": f, "C h": c, "starts": len(ticks),
            "adaptive / UP cost": float(np.mean([r.cost for r in ad]) / np.mean([r.cost for r in up])),
            "starts > UP": sum(a.cost > u.cost + 1e-6 for a, u in zip(ad, up)),
            "UP spot vs opt.": float(np.mean([r.spot_hours for r in up])) / opt_spot,
            "adaptive spot vs opt.": float(np.mean([r.spot_hours for r in ad])) / opt_spot,
            "launches UP / adaptive": f"{np.mean([r.changeovers for r in up]):.1f} / {np.mean([r.changeovers for r in ad]):.1f}",
            "misses": sum(not r.met_deadline for r in ad)}


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
