"""Held-out check for the adaptive policy: synthetic traces shaped like the real ones, never tuned on.

For each (availability, mean run, tick) like one of the bundled traces, three seeds of two
kinds of trace: `trace.synthetic` (exponential, memoryless runs) and `helpers.heavy_tailed`
(log-normal runs, mostly minutes and a few hours long, as in the real traces). Reports UP's
and adaptive's spot use vs the optimum's (and cost vs the optimum's), averaged over seeds.
Not collected by pytest (it takes ~30 s of CPU); run it as

    .venv/bin/python -m tests.market.generalise [--starts 100] [--json]
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from spotrun.market.policies import make
from spotrun.market.policies.optimum import solve
from spotrun.market.policy import JobSpec
from spotrun.market.sim import Market, simulate
from spotrun.market.trace import synthetic
from tests.market.helpers import heavy_tailed

JOB = JobSpec(48 * 3600, 60 * 3600, 0.2 * 3600)
POLICIES = ("up", "adaptive")
SEEDS = 3
# (availability, mean run h, tick s), like the bundled traces from us-east-1a to us-west-2a_k80_1
SHAPES = [(0.17, 0.72, 195), (0.12, 1.6, 600), (0.33, 1.6, 600), (0.48, 1.16, 600), (0.46, 1.0, 195),
          (0.76, 2.0, 195), (0.89, 4.0, 600)]
SIGMA = 1.5  # log-normal shape; its mean is median x e^(sigma^2 / 2)


def _run(kind: str, shape: tuple[float, float, int], seed: int, starts: int) -> dict:
    availability, life_h, gap = shape
    if kind == "exponential":
        trace = synthetic(400, gap, availability, life_h * 3600, seed=seed)
    else:
        trace = heavy_tailed(400, gap, availability, life_h * 3600 / np.exp(SIGMA**2 / 2), SIGMA, seed=seed)
    m = Market.of([trace])
    ticks = m.random_starts(JOB, starts, seed)
    opt = solve(JOB, m, ticks)
    opt_spot, opt_cost = np.mean([r.spot_hours for r in opt]), np.mean([r.cost for r in opt])
    out = {"kind": kind, "shape": shape, "seed": seed}
    for p in POLICIES:
        runs = [simulate(make(p), JOB, m, int(s)) for s in ticks]
        out[p] = {"spot_vs_optimum": float(np.mean([r.spot_hours for r in runs]) / opt_spot),
                  "cost_vs_optimum": float(np.mean([r.cost for r in runs]) / opt_cost),
                  "misses": sum(not r.met_deadline for r in runs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    jobs = [(k, s, seed, args.starts) for k in ("exponential", "heavy-tailed") for s in SHAPES for seed in range(SEEDS)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_run, *zip(*jobs)))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Synthetic held-out traces: spot use vs optimum (cost vs optimum), mean of {SEEDS} seeds")
    for col in ("kind", "avail.", "mean run", "tick", *POLICIES, "adaptive < 90 %", "misses"):
        t.add_column(col, justify="left" if col == "kind" else "right", no_wrap=True)
    for kind in ("exponential", "heavy-tailed"):
        for shape in SHAPES:
            rows = [r for r in results if r["kind"] == kind and r["shape"] == shape]
            cells = [f"{np.mean([r[p]['spot_vs_optimum'] for r in rows]):.0%} "
                     f"({np.mean([r[p]['cost_vs_optimum'] for r in rows]):.3f})" for p in POLICIES]
            below = sum(r["adaptive"]["spot_vs_optimum"] < 0.9 for r in rows)
            misses = sum(r[p]["misses"] for r in rows for p in POLICIES)
            t.add_row(kind, f"{shape[0]:.0%}", f"{shape[1]:g} h", f"{shape[2]} s", *cells, f"{below}/{len(rows)}", str(misses))
    Console().print(t)


if __name__ == "__main__":
    main()
