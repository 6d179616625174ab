"""The optimum's two solvers against the DP they replaced (commit 076491c), on every bundled trace.

That DP rounded d to whole ticks, so the comparison uses d = 0.2 h rounded the same way, the
one case where both must agree to the cent. Needs the repository's git history.

    .venv/bin/python benchmarks/market_optimum_vs_old.py
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import spotrun.market.sim as sim
from spotrun.market.policies.optimum import solve
from spotrun.market.policy import JobSpec
from spotrun.market.sim import Market
from spotrun.market.trace import bundled, load_trace

OLD = "076491c"


def old_solver():
    source = subprocess.run(["git", "show", f"{OLD}:src/spotrun/market/policies/optimum.py"], check=True,
                            capture_output=True, text=True, cwd=Path(__file__).parent).stdout
    sim.changeover_ticks = lambda d, g: max(1, round(d / g))  # what the old module imports from sim
    path = Path(tempfile.mkdtemp()) / "optimum_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("optimum_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.solve


def main() -> None:
    old = old_solver()
    worst, starts_compared = 0.0, 0
    for name in bundled():
        trace = load_trace(name)
        market = Market.of([trace])
        d = round(720 / trace.gap_s) * trace.gap_s
        for c, deadline in ((48, 60), (8, 10)):
            job = JobSpec(c * 3600, deadline * 3600, d)
            try:
                starts = market.random_starts(job, 30, 1)
            except ValueError:  # trace shorter than the deadline
                continue
            before = old(job, market, starts)
            for method in ("tick", "segment"):
                diff = max(abs(a.cost - b.cost) for a, b in zip(before, solve(job, market, starts, method)))
                worst = max(worst, diff)
            starts_compared += len(starts)
            print(f"{name} C={c}h d={d:g}s: largest |new - old| ${diff:.2g}", flush=True)
    print(f"{starts_compared} starts compared, each by both solvers; largest difference ${worst:.2g}")
    sys.exit(0 if worst < 1e-6 else 1)


if __name__ == "__main__":
    main()
