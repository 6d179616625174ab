"""Virtual-time simulator: replay a job through one or more zones' traces under a policy.

The model is the *Can't Be Late* one, on the trace's tick grid: spot capacity seen at tick i
holds for that whole tick; a reclaim happens at a tick boundary; every launch of a new
instance (after a reclaim, a zone hop, a spot/on-demand switch) pays the changeover delay d
at that instance's price before making progress. d is exact, in seconds: a changeover that
is not a whole number of ticks ends inside a tick, and the rest of that tick is work.
Billing is per second; the last tick is billed up to the moment the job finishes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spotrun.market.policy import IDLE, IDLE_KIND, ON_DEMAND_KIND, SPOT_KIND, Decision, JobSpec, Observation, Policy
from spotrun.market.trace import Trace


# The optimum's grid must hold both the tick and d; finer than this many steps a tick, it
# refuses rather than take minutes (a 1-second grid on 197-second ticks, say).
MAX_STEPS_PER_TICK = 64
# How much of the market before a job's start a policy may read (`warm`): a week, as clouds
# keep spot history (AWS: 90 days of prices), and short enough to be cheap.
HISTORY_S = 7 * 24 * 3600


def exact_grid(changeover_s: float, gap_s: float) -> tuple[float, int, int]:
    """(step s, tick in steps, d in steps): the coarsest grid on which both are whole numbers.

    The optimum counts slack on this grid, so it is exact for any d, not d rounded to ticks;
    times are taken to the millisecond.
    """
    g_ms, d_ms = round(gap_s * 1000), round(changeover_s * 1000)
    step = math.gcd(g_ms, d_ms)
    if g_ms // step > MAX_STEPS_PER_TICK:
        coarse = g_ms / MAX_STEPS_PER_TICK / 1000
        raise ValueError(
            f"the exact optimum needs a {step / 1000:g}s grid for changeover {changeover_s:g}s on {gap_s:g}s ticks "
            f"({g_ms // step} steps a tick, at most {MAX_STEPS_PER_TICK}); give a changeover that shares a "
            f"step of at least {coarse:.3g}s with the tick (a multiple of {gap_s / 2:g}s, {gap_s / 4:g}s, ...), "
            "or leave out the optimum (--policies)"
        )
    return step / 1000, g_ms // step, d_ms // step


@dataclass(frozen=True, eq=False)
class Market:
    """Aligned traces of one or more zones: the spot market a job can use."""

    traces: tuple[Trace, ...]
    gap_s: float
    available: np.ndarray  # (ticks, zones) bool
    spot_prices: np.ndarray | None  # (ticks, zones) $/h, None = the job's spot price everywhere

    @classmethod
    def of(cls, traces: Sequence[Trace]) -> Market:
        if not traces:
            raise ValueError("a market needs at least one trace")
        gaps = {t.gap_s for t in traces}
        if len(gaps) > 1:
            raise ValueError(
                "zones in one market must share a tick; got gap_seconds "
                + ", ".join(f"{t.name}={t.gap_s:g}" for t in traces)
            )
        n = min(t.ticks for t in traces)
        available = np.stack([t.available[:n] for t in traces], axis=1)
        prices = None
        if any(t.prices is not None for t in traces):
            prices = np.stack([t.prices[:n] if t.prices is not None else np.full(n, np.nan) for t in traces], axis=1)
        return cls(tuple(traces), gaps.pop(), available, prices)

    @property
    def name(self) -> str:
        return "+".join(t.name for t in self.traces)

    @property
    def ticks(self) -> int:
        return self.available.shape[0]

    @property
    def zones(self) -> int:
        return self.available.shape[1]

    def window_ticks(self, job: JobSpec) -> int:
        """Ticks from a start to the deadline; raises when the trace is shorter than that."""
        n = math.ceil(job.deadline_s / self.gap_s - 1e-9)
        if n > self.ticks:
            raise ValueError(
                f"trace {self.name} covers {self.ticks * self.gap_s / 3600:.1f}h, shorter than the "
                f"deadline {job.deadline_s / 3600:g}h: use a longer trace or a shorter job"
            )
        return n

    def prices_at(self, job: JobSpec) -> np.ndarray:
        """(ticks, zones) spot $/h with the job's spot price wherever the trace has none."""
        if self.spot_prices is None:
            return np.full(self.available.shape, job.spot_price)
        return np.where(np.isnan(self.spot_prices), job.spot_price, self.spot_prices)

    def random_starts(self, job: JobSpec, count: int, seed: int) -> np.ndarray:
        last = self.ticks - self.window_ticks(job)
        return np.random.default_rng(seed).integers(0, last + 1, size=count)


@dataclass(frozen=True)
class RunResult:
    policy: str
    market: str
    start_tick: int
    cost: float  # $
    spot_s: float  # billed seconds on spot (changeovers included)
    on_demand_s: float
    spot_work_s: float  # compute done on spot (changeovers excluded): the paper's "spot hours"
    on_demand_work_s: float
    finish_s: float  # time from the start to the job's end
    met_deadline: bool
    changeovers: int
    preemptions: int | None  # None where not tracked (the optimum)

    @property
    def spot_hours(self) -> float:
        """Hours of the job's compute done on spot (Table 3 of the paper counts these)."""
        return self.spot_work_s / 3600

    @property
    def on_demand_hours(self) -> float:
        return self.on_demand_work_s / 3600


@dataclass
class Run:
    """A job's progress through the market and its bill so far, one tick at a time."""

    remaining: float
    state: Decision = IDLE
    overhead: float = 0.0  # changeover still to pay on the running instance
    cost: float = 0.0
    spot_s: float = 0.0
    on_demand_s: float = 0.0
    spot_work_s: float = 0.0
    on_demand_work_s: float = 0.0
    changeovers: int = 0
    preemptions: int = 0
    finish_s: float | None = None

    def observe(self, t: float, deadline_s: float, d: float, avail: tuple[bool, ...], prices: tuple[float, ...],
                od_price: float, g: float) -> Observation:
        """What a policy sees at the start of a tick; a spot instance whose capacity is gone was reclaimed."""
        if self.state.kind == SPOT_KIND and not avail[self.state.zone]:
            self.state, self.overhead = IDLE, 0.0
            self.preemptions += 1
        return Observation(t, self.remaining, deadline_s - t, d, self.state, avail, prices, od_price, g, self.overhead)

    def ride(self, ticks: int, g: float, cost: float) -> None:
        """Keep the running instance, past its changeover, for `ticks` whole ticks of work that do not finish the job."""
        work = ticks * g
        self.remaining -= work
        self.cost += cost
        if self.state.kind == ON_DEMAND_KIND:
            self.on_demand_s += work
            self.on_demand_work_s += work
        else:
            self.spot_s += work
            self.spot_work_s += work

    def step(self, choice: Decision, obs: Observation) -> None:
        """Run `choice` for the tick `obs` saw: a launch pays d first; the finishing tick is billed to the second."""
        if choice.kind == SPOT_KIND and not obs.available[choice.zone]:
            choice = IDLE  # no capacity: the launch fails and the job waits
        if choice != self.state:
            self.overhead = 0.0 if choice.kind == IDLE_KIND else obs.changeover_s
            self.changeovers += choice.kind != IDLE_KIND
            self.state = choice
        if choice.kind == IDLE_KIND or self.finish_s is not None:
            return
        g = obs.tick_s
        paid = min(self.overhead, g)
        self.overhead -= paid
        work = min(g - paid, self.remaining)
        self.remaining -= work
        billed = paid + work if self.remaining <= 0 else g
        if self.remaining <= 0:
            self.finish_s = obs.elapsed_s + billed
        price = obs.on_demand_price if choice.kind == ON_DEMAND_KIND else obs.spot_prices[choice.zone]
        self.cost += price * billed / 3600
        if choice.kind == ON_DEMAND_KIND:
            self.on_demand_s += billed
            self.on_demand_work_s += work
        else:
            self.spot_s += billed
            self.spot_work_s += work


def simulate(policy: Policy, job: JobSpec, market: Market, start: int = 0) -> RunResult:
    """Run `job` from tick `start` under `policy`; a miss is finished on on-demand past the deadline."""
    g = market.gap_s
    d = job.changeover_s
    n = market.window_ticks(job)
    if not 0 <= start <= market.ticks - n:
        raise ValueError(
            f"start ticks must be within 0..{market.ticks - n} in trace {market.name} to leave the deadline"
        )
    rows = [tuple(r) for r in market.available[start : start + n].tolist()]
    prices = market.prices_at(job)[start : start + n]
    price_rows = [tuple(r) for r in prices.tolist()]
    od_price = job.on_demand_price
    policy.reset(job)
    warm = getattr(policy, "warm", None)
    if warm is not None:  # the market's past is known at the start, as a cloud's history is
        warm(market.available[max(0, start - round(HISTORY_S / g)) : start], g)
    ride = getattr(policy, "ride", None)
    window = market.available[start : start + n]
    # Ticks after which the market changes (capacity or a price): rows i+1 .. the next one repeat row i.
    changes = np.flatnonzero(((window[1:] != window[:-1]) | (prices[1:] != prices[:-1])).any(axis=1))
    run = Run(job.compute_s)
    i = 0
    while i < n:
        obs = run.observe(i * g, job.deadline_s, d, rows[i], price_rows[i], od_price, g)
        run.step(policy.decide(obs), obs)
        if run.finish_s is not None:
            break
        i += 1
        if ride is None or run.state.kind == IDLE_KIND or run.overhead > 0:
            continue
        k = int(np.searchsorted(changes, i - 1))
        last = int(changes[k]) if k < len(changes) else n - 1  # ticks i .. last see tick i-1's market
        ticks = min(last - i + 1, math.ceil(run.remaining / g - 1e-9) - 1)  # the finishing tick goes through `step`
        if ticks <= 0:
            continue
        price = od_price if run.state.kind == ON_DEMAND_KIND else price_rows[i - 1][run.state.zone]
        cost = price * ticks * g / 3600
        seen = obs._replace(elapsed_s=i * g, remaining_compute_s=run.remaining, remaining_time_s=job.deadline_s - i * g,
                            state=run.state, overhead_left_s=0.0)
        if ride(seen, ticks, cost):
            run.ride(ticks, g, cost)
            i += ticks
    finish = run.finish_s
    if finish is None:  # missed: finish on on-demand after the deadline so costs stay comparable
        extra = run.remaining + (run.overhead if run.state.kind == ON_DEMAND_KIND else d)
        run.on_demand_s += extra
        run.on_demand_work_s += run.remaining
        run.cost += od_price * extra / 3600
        finish = n * g + extra
    return RunResult(
        policy=policy.name, market=market.name, start_tick=int(start), cost=run.cost,
        spot_s=run.spot_s, on_demand_s=run.on_demand_s, spot_work_s=run.spot_work_s,
        on_demand_work_s=run.on_demand_work_s, finish_s=finish, met_deadline=finish <= job.deadline_s + 1e-6,
        changeovers=run.changeovers, preemptions=run.preemptions,
    )
