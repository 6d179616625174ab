"""Sweeps: many random start times x markets x policies, and the paper's Table 3 summary of them."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence

import numpy as np

from spotrun.market.policies import OPTIMUM, make
from spotrun.market.policies.optimum import solve
from spotrun.market.policy import JobSpec
from spotrun.market.sim import Market, RunResult, simulate


def _run(job: JobSpec, market: Market, policy: str, starts: np.ndarray, solver: str | None = None) -> list[RunResult]:
    if policy == OPTIMUM:
        return solve(job, market, starts, solver)
    p = make(policy)
    return [simulate(p, job, market, int(s)) for s in starts]


def run_sweep(
    job: JobSpec,
    markets: Sequence[Market],
    policies: Sequence[str],
    starts: int = 300,
    seed: int = 0,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
    solver: str | None = None,
) -> list[RunResult]:
    """Every policy from the same random start ticks in every market (paired comparisons).

    Work is split per (market, policy) over `workers` processes (default: the CPU count, at
    most 2 is what the benchmark assumes); `on_done(n_runs)` reports progress; `solver` picks
    the optimum's (`tick` or `segment`; default the faster one for each market).
    """
    for p in policies:
        if p != OPTIMUM:
            make(p)  # unknown names fail here, before any work starts
    tasks = [(job, m, p, m.random_starts(job, starts, seed + i), solver) for i, m in enumerate(markets) for p in policies]
    workers = workers or os.cpu_count() or 1
    results: list[RunResult] = []
    if workers <= 1 or len(tasks) == 1:
        for t in tasks:
            results += _run(*t)
            if on_done:
                on_done(len(t[3]))
        return results
    # The optimum is the slowest task: submit it first so the pool ends together.
    tasks.sort(key=lambda t: t[2] != OPTIMUM)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_run, *t) for t in tasks]
        for f in as_completed(futures):
            batch = f.result()
            results += batch
            if on_done:
                on_done(len(batch))
    return results


def run_sweep_at(job: JobSpec, markets: Sequence[Market], policies: Sequence[str], start: int) -> list[RunResult]:
    """One run per policy and market, all from tick `start`."""
    return [r for m in markets for p in policies for r in _run(job, m, p, np.array([start]))]


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std())}


def summarize(results: Sequence[RunResult], policies: Sequence[str]) -> list[dict]:
    """Per policy: on-demand and spot hours, cost, spot use relative to the optimum, misses.

    `spot_vs_optimum` is the ratio of mean spot hours, as the paper's Table 3 reports it; it is
    None when the optimum was not run.
    """
    by: dict[str, list[RunResult]] = {p: [] for p in policies}
    for r in results:
        by.setdefault(r.policy, []).append(r)
    opt = by.get(OPTIMUM) or []
    opt_spot = float(np.mean([r.spot_hours for r in opt])) if opt else None
    rows = []
    for p in policies:
        runs = by.get(p) or []
        if not runs:
            continue
        spot = _stats([r.spot_hours for r in runs])
        rows.append({
            "policy": p,
            "runs": len(runs),
            "on_demand_hours": _stats([r.on_demand_hours for r in runs]),
            "spot_hours": spot,
            "cost": _stats([r.cost for r in runs]),
            "spot_vs_optimum": (spot["mean"] / opt_spot if opt_spot else None),
            "deadline_misses": sum(not r.met_deadline for r in runs),
            "changeovers": float(np.mean([r.changeovers for r in runs])),
        })
    return rows


def per_market(results: Sequence[RunResult], policies: Sequence[str]) -> dict[str, list[dict]]:
    markets: dict[str, list[RunResult]] = {}
    for r in results:
        markets.setdefault(r.market, []).append(r)
    return {m: summarize(rs, policies) for m, rs in markets.items()}
