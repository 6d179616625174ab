"""Hand-built markets and a policy that plays a fixed script: how the tests pin down every number."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from spotrun.market.policy import Decision, JobSpec, Observation
from spotrun.market.sim import Market
from spotrun.market.trace import Trace, synthetic


def market(*zones: Sequence[int], gap_s: float = 600.0) -> Market:
    """A market from 0/1 lists, one per zone."""
    return Market.of([Trace(f"z{i}", gap_s, np.asarray(z, dtype=bool)) for i, z in enumerate(zones)])


class Script:
    """Plays one decision per tick: how the tests enumerate every possible plan."""

    name = "script"

    def __init__(self, decisions: Sequence[Decision]):
        self.decisions = list(decisions)

    def reset(self, job: JobSpec) -> None:
        self.i = 0

    def decide(self, obs: Observation) -> Decision:
        d = self.decisions[min(self.i, len(self.decisions) - 1)]
        self.i += 1
        return d


def heavy_tailed(hours: float, gap_s: float, availability: float, median_run_s: float, sigma: float = 1.5,
                 seed: int = 0) -> Trace:
    """Spot runs and gaps with log-normal lengths: most short, a few very long, as in the real traces.

    `trace.synthetic` draws exponential (memoryless) runs, where a run's age says nothing
    about what is left of it; real runs are not like that, and this is how to test a policy
    that relies on it on traces it was not tuned on. Gaps share the runs' shape, scaled so
    that the long-run fraction available is `availability`.
    """
    rng = np.random.default_rng(seed)
    n = max(1, int(round(hours * 3600 / gap_s)))
    mu_run = np.log(median_run_s)
    mu_gap = mu_run + np.log((1 - availability) / availability)
    out = np.zeros(n, dtype=bool)
    i, up = 0, bool(rng.random() < availability)
    while i < n:
        length = max(1, int(round(rng.lognormal(mu_run if up else mu_gap, sigma) / gap_s)))
        out[i : i + length] = up
        i += length
        up = not up
    label = f"heavy(a={availability:g},median={median_run_s:g}s,seed={seed})"
    return Trace(label, float(gap_s), out)


def random_market(seed: int) -> tuple[JobSpec, Market]:
    """A random job on a random market: 1-3 zones, exponential or heavy-tailed runs, availability
    15-90 %, moving prices on a third, 600/300/195-s ticks, d of 180, 720 or 1800 s (not all
    whole ticks), C/D of 0.5, 0.8 or 0.95. The property test's generator, and the benchmark's."""
    rng = np.random.default_rng(500 + seed)
    gap = [600.0, 300.0, 195.0][seed % 3]
    traces = []
    for z in range(1 + seed // 4 % 3):
        a, life = float(rng.uniform(0.15, 0.9)), float(rng.uniform(0.3, 4)) * 3600
        t = heavy_tailed(150, gap, a, life / 3, seed=seed * 5 + z) if seed % 2 else synthetic(150, gap, a, life, seed=seed)
        prices = np.repeat(rng.uniform(0.5, 2.5, t.ticks // 12 + 1), 12)[: t.ticks] if seed % 3 == 1 else None
        traces.append(Trace(t.name, gap, t.available, prices=prices))
    compute, changeover = float(rng.choice([8.0, 24.0])) * 3600, float(rng.choice([180.0, 720.0, 1800.0]))
    job = JobSpec(compute, max(compute / float(rng.choice([0.5, 0.8, 0.95])), compute + 2 * changeover), changeover)
    return job, Market.of(traces)
