"""`spotrun simulate --controller`: the simulator's sweep replayed through the real controller.

Every (policy, start tick) run of the sweep becomes a job on the sim provider, and the real
`Reconciler`, with the real policies behind `spot: auto`, drives them all at once in virtual
time: one pass per trace tick, the clock set to the tick before the pass and frozen during it.
Each start gets its own zones (the trace rolled to start at that tick), so every run starts at
the same virtual moment and one pass serves them all. The sim instance boots for the changeover
d, does the job's work with a perfect checkpoint across attempts, and is reclaimed where the
trace's capacity ends (notice lead 0): the simulator's model, played by the controller.

What differs, and why (see docs/sim.md): the controller learns of an instance it stopped for
a switch at its next pass, so a switch relaunches one tick later than in the simulator (which
starts the new capacity on the tick it decides); its policy sees the job's compute left as
estimated from run time (exact here) but never below one tick; and a spot attempt pays the
price of the tick it was launched in (the simulator charges each tick's price).
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from spotrun.market.policy import JobSpec as MarketJob
from spotrun.market.sim import Market, RunResult
from spotrun.market.trace import Trace

T0 = 1_000_000_000.0  # virtual start of every run (2001-09-09): far from any real timestamp
ON_DEMAND = "on-demand"
POLICIES = ("on-demand", "greedy", "up", "adaptive")  # what a job spec can name (`optimum` is a bound, not a policy)


class _NoJitter(random.Random):
    """The reconciler's jitter and backoff at their lower bound: a relaunch after a reclaim
    happens on the tick of the reclaim, as in the simulator, and every replay is the same."""

    def uniform(self, a: float, b: float) -> float:
        return a


class _Errors(logging.Handler):
    """A step that failed would silently change the outcome: the replay fails instead."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.format(record))


def _rolled(trace: Trace, start: int, ticks: int) -> Trace:
    """The trace as seen from tick `start`: tick 0 is the run's first."""
    prices = None if trace.prices is None else np.roll(trace.prices[:ticks], -start)
    return replace(trace, name=f"{trace.name}@{start}", available=np.roll(trace.available[:ticks], -start), prices=prices)


def _spec(policy: str, job: MarketJob, zones: list[str]) -> dict:
    auto = policy != ON_DEMAND
    return {
        "name": policy, "run": "simulated",
        "resources": {"cloud": "sim", "spot": "auto" if auto else False, "zones": zones,
                      **({"policy": policy, "compute": job.compute_s, "changeover": job.changeover_s} if auto else {})},
        "recovery": {"deadline": job.deadline_s, "max_reclaims": 1_000_000},
        "sim": {"work": job.compute_s},
    }


def replay(job: MarketJob, markets: Sequence[Market], policies: Sequence[str], starts: Sequence[np.ndarray],
           workdir: Path | None = None) -> list[RunResult]:
    """Results shaped as the simulator's, run by run, for `policies` from `starts[i]` in `markets[i]`."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"the controller runs only online policies ({', '.join(POLICIES)}), not {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="spotrun-replay-", dir=workdir) as tmp:
        results: list[RunResult] = []
        for i, (market, ticks) in enumerate(zip(markets, starts)):
            results += asyncio.run(_replay_market(job, market, list(policies), [int(s) for s in ticks],
                                                  Path(tmp) / f"market-{i}.db"))
        return results


async def _replay_market(job: MarketJob, market: Market, policies: list[str], starts: list[int],
                         db_path: Path) -> list[RunResult]:
    from spotrun.controller import repo
    from spotrun.controller.db import Database
    from spotrun.controller.models import Job
    from spotrun.controller.reconciler import Reconciler
    from spotrun.controller.spec import load_spec
    from spotrun.providers.local.market import MarketConfig
    from spotrun.providers.sim import SimConfig, SimProvider, VirtualClock

    g, n = market.gap_s, market.window_ticks(job)
    clock = VirtualClock(T0)
    zones = {s: [f"z{z}@{s}" for z in range(market.zones)] for s in dict.fromkeys(starts)}
    traces = {name: _rolled(t, s, market.ticks) for s, names in zones.items() for name, t in zip(names, market.traces)}
    sim = SimProvider(SimConfig(market=MarketConfig(trace=traces, lead_s=0.0, trace_epoch=T0), boot_s=job.changeover_s,
                                spot_price=job.spot_price, on_demand_price=job.on_demand_price), clock)
    errors = _Errors()
    logging.getLogger("spotrun").addHandler(errors)
    db = Database(f"sqlite:///{db_path}")
    try:
        with clock.installed():
            wanted = [(p, s) for s in starts for p in policies]
            runs = dict(zip(repo.create_jobs(db, [load_spec(_spec(p, job, zones[s])) for p, s in wanted]), wanted))
            rec = Reconciler(db, {"sim": sim}, interval=g, exclusive=True, sweep_every=10**9, rng=_NoJitter(),
                             max_actions=len(runs))
            for k in range(n + 1):  # the last pass, at the deadline, records what finished in the last tick
                clock.set(T0 + k * g)
                await rec.run_once()
                await rec.settle()
                if not repo.count_active(db):
                    break
            if errors.seen:
                raise RuntimeError("the controller failed a step during the replay:\n" + "\n".join(errors.seen))
            with db.session() as s:
                return [_result(s, s.get(Job, job_id), policy, market.name, start, job, clock.time())
                        for job_id, (policy, start) in runs.items()]
    finally:
        logging.getLogger("spotrun").removeHandler(errors)
        db.close()


def _result(s, row, policy: str, market: str, start: int, job: MarketJob, now: float) -> RunResult:
    """One run in the simulator's terms, from the job's attempts; a run still going at the
    deadline is finished on on-demand past it, as the simulator does, so costs stay comparable."""
    from spotrun.controller import repo
    from spotrun.controller.models import Cause, JobStatus

    d = job.changeover_s
    launched = [a for a in repo.attempts_of(s, row.id) if a.instance_id is not None]
    spot_s = od_s = spot_work = od_work = cost = 0.0
    for a in launched:
        billed = (a.ended_at or now) - a.started_at
        work = max(0.0, billed - d)
        cost += repo.attempt_cost(a, now)[0]
        if a.spot:
            spot_s, spot_work = spot_s + billed, spot_work + work
        else:
            od_s, od_work = od_s + billed, od_work + work
    done = row.status == JobStatus.SUCCEEDED.value
    if done:
        finish = max(a.ended_at for a in launched) - T0
    else:
        remaining = max(0.0, job.compute_s - spot_work - od_work)
        last = launched[-1] if launched else None
        running_od = last is not None and last.ended_at is None and not last.spot
        extra = remaining + (max(0.0, d - (now - last.started_at)) if running_od else d)
        od_s, od_work, cost = od_s + extra, od_work + remaining, cost + job.on_demand_price * extra / 3600
        finish = (now - T0) + extra
    return RunResult(
        policy=policy, market=market, start_tick=start, cost=cost, spot_s=spot_s, on_demand_s=od_s,
        spot_work_s=spot_work, on_demand_work_s=od_work, finish_s=finish,
        met_deadline=done and finish <= job.deadline_s + 1e-6, changeovers=len(launched),
        preemptions=sum(a.cause == Cause.RECLAIM.value for a in launched),
    )


__all__ = ["POLICIES", "replay"]
