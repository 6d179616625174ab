"""spotrun's own policy: Uniform Progress as the baseline, with deviations paid from a ledger against it.

It asks UP's rules first (`UniformProgress`, on the same observation) and departs from them
only where its own estimate says that is cheaper; the exact Safety Net (`is_safe`) has the
last word, so it never misses a deadline on-demand could meet.
- The deviation: leave on-demand for spot where UP's hysteresis would stay (UP waits until it
  is ahead of ep(t + 2d)), when what is left of the spot run is expected to outlive `margin` x
  the break-even of the two changeovers it may cost, 2kd/(k-1), with k the on-demand price
  over the spot price *now* (the trace's own prices where it has them); the slack after both
  changeovers still holds `od_exit` x the slack of a job on UP's line; and the two
  changeovers are at most `stake` x the slack (with tight slack, lag is paid at the end on
  on-demand while UP rides spot). What is left of a run is judged from its age and the runs
  seen (`residual_s`), shrunk towards a short prior.
- The ledger (the hedge): the policy replays UP itself on the same observations (a shadow
  job: UP's decisions, progress and bill, which need nothing a live job does not see) and
  keeps the score: UP's bill minus its own, plus the compute it is ahead of UP valued at the
  on-demand price (the most a second of lag can cost to make up). A deviation is taken only
  while the score, after the deviation's worst case (the run dies after one tick), stays
  above -`budget` x a floor of UP's bill. Deviations that lose stop by themselves, and a job
  that has not gained never risks more than the budget on one: where the estimate is wrong
  the policy falls back to UP's rules.
- Spot dearer than on-demand is never launched; with several zones it launches in the
  cheapest zone with capacity, the first among equals as UP does (`rank_zones` reads the
  market's history instead), and never hops while the running zone has capacity, so a job
  launches at most once per reclaim or deviation.
Everything it learns comes from the observations, so the controller can call it live.
Parameters were chosen on the stress grid, the paper set-up and synthetic markets; see
docs/market.md for the cost against UP in every cell.
"""

from __future__ import annotations

import numpy as np

from spotrun.market.policies.uniform_progress import UniformProgress
from spotrun.market.policy import IDLE, ON_DEMAND, ON_DEMAND_KIND, SPOT_KIND, Decision, JobSpec, Observation, is_safe, spot
from spotrun.market.sim import Run
from spotrun.market.trace import Trace


class Adaptive:
    name = "adaptive"

    def __init__(
        self,
        od_exit: float = 0.6,
        prior_lifetime_s: float = 3600,
        prior_weight: float = 1.0,
        margin: float = 1.5,
        budget: float = 0.015,
        stake: float = 0.2,
        rank_zones: bool = False,
    ):
        self.rank_zones = rank_zones
        self.name = "adaptive-zones" if rank_zones else "adaptive"
        self.stake = stake
        self.od_exit = od_exit
        self.prior_lifetime_s = prior_lifetime_s
        self.prior_weight = prior_weight
        self.margin = margin
        self.budget = budget

    def reset(self, job: JobSpec) -> None:
        self.job = job
        self.age_s: list[float] = []
        self.baseline = UniformProgress()
        self.baseline.reset(job)
        self.shadow_run = Run(job.compute_s)  # UP's own job, replayed on our observations
        self.own_run = Run(job.compute_s)  # our own bill, from our decisions

    def warm(self, past: np.ndarray, gap_s: float) -> None:
        """Learn the zones' runs from the market before the start ((ticks, zones) bool), when known.

        Used to rank zones (`best_zone`), not for the deviation, which was measured on what a
        job sees itself: with history it deviated more and lost (up to +0.8 % against UP at
        d = 0.5 h, C = 100 h). A run already going at the start of `past` is cut short, so it
        is left out.
        """
        if not self.rank_zones:
            return
        self._start(past.shape[1])
        for z in range(past.shape[1] if len(past) else 0):
            ended = list(Trace("past", gap_s, past[:, z]).runs()[0])
            self.run_age_s[z] = ended.pop() if past[-1, z] else 0.0  # the run going on at the start
            if past[0, z] and ended:
                ended.pop(0)
            self.all_runs[z] = ended
        if len(past):
            self.last = tuple(bool(x) for x in past[-1])

    def _start(self, zones: int) -> None:
        self.age_s = [0.0] * zones  # how long each zone's current run has lasted in the job
        self.run_age_s = [0.0] * zones  # the same, counting the history before the start
        self.runs: list[list[float]] = [[] for _ in range(zones)]  # each zone's ended runs in the job
        self.all_runs: list[list[float]] = [[] for _ in range(zones)]  # ended runs, the history before the start too
        self.last = (False,) * zones

    def _observe(self, obs: Observation) -> None:
        if len(self.age_s) != len(obs.available):
            self._start(len(obs.available))
            self.last = obs.available
        for z, up in enumerate(obs.available):
            if up:
                self.age_s[z] += obs.tick_s
                self.run_age_s[z] += obs.tick_s
            elif self.last[z]:
                self.runs[z].append(self.age_s[z])
                self.all_runs[z].append(self.run_age_s[z])
                self.age_s[z] = self.run_age_s[z] = 0.0
        self.last = obs.available

    def residual_s(self, zone: int, history: bool = False) -> float:
        """Expected time left of the zone's current spot run, given how long it has lasted.

        Spot runs are far from memoryless: most end within minutes, but one that has held a
        while tends to hold much longer. So the ended runs that lasted at least the current
        one's age (it holds through this tick, which the age already counts) say how long it
        will go on, shrunk towards the prior while few have. With `history`, the runs and the
        age include the market before the start.
        """
        age, runs = (self.run_age_s[zone], self.all_runs[zone]) if history else (self.age_s[zone], self.runs[zone])
        w = self.prior_weight
        longer = [r - age for r in runs if r >= age - 1e-6]
        return (sum(longer) + w * self.prior_lifetime_s) / (len(longer) + w)

    def score(self, obs: Observation) -> float:
        """$ ahead of UP so far: UP's bill minus ours, plus the compute we are ahead, at on-demand price."""
        up = self.shadow_run
        ahead_s = (up.remaining + up.overhead) - (obs.remaining_compute_s + obs.overhead_left_s)
        return up.cost - self.own_run.cost + ahead_s * obs.on_demand_price / 3600

    def decide(self, obs: Observation) -> Decision:
        self._observe(obs)
        up = self.shadow_run
        up_obs = up.observe(obs.elapsed_s, self.job.deadline_s, obs.changeover_s, obs.available, obs.spot_prices,
                            obs.on_demand_price, obs.tick_s)  # the shadow's spot instance is reclaimed too
        if obs.remaining_compute_s <= 0:
            return IDLE
        cheap = tuple(up and p < obs.on_demand_price for up, p in zip(obs.available, obs.spot_prices))
        seen = obs if cheap == obs.available else obs._replace(available=cheap)  # dearer spot: never launched
        choice = self.baseline.decide(seen)
        # Until the first deviation both jobs are in one state, so UP's answer is the shadow's (UP keeps no state).
        up_choice = choice if seen is obs and up_obs == obs else self.baseline.decide(up_obs)
        if choice.kind == SPOT_KIND and obs.state.kind != SPOT_KIND:
            choice = spot(self.best_zone(seen))
        elif obs.state.kind == ON_DEMAND_KIND and choice == ON_DEMAND and any(cheap):
            leave = spot(self.best_zone(seen))
            if self.worth_leaving(seen, leave) and self.score(obs) - self.worst_loss(seen, leave) >= -self.allowance(obs):
                choice = leave
        choice = choice if is_safe(obs, choice) else ON_DEMAND
        if up.finish_s is None:
            up.step(up_choice, up_obs)
        mine = self.own_run
        mine.state, mine.overhead, mine.remaining = obs.state, obs.overhead_left_s, obs.remaining_compute_s
        mine.step(choice, obs)
        return choice

    def allowance(self, obs: Observation) -> float:
        """The most the ledger may stand below UP: `budget` x a floor of UP's final bill.

        The floor is what UP has spent plus its remaining compute at the cheapest spot price
        now, so the allowance is a fraction of UP's own cost, whatever the prices.
        """
        up = self.shadow_run
        return self.budget * (up.cost + (up.remaining + up.overhead) * min(obs.spot_prices) / 3600)

    @staticmethod
    def worst_loss(obs: Observation, choice: Decision) -> float:
        """What the deviation costs the score if the spot run dies after one tick.

        Two changeovers of lag (the spot launch, then on-demand again) at the on-demand price,
        less the tick billed at spot instead of on-demand.
        """
        d, g, od = obs.changeover_s, obs.tick_s, obs.on_demand_price
        return (min(d, g) + d) * od / 3600 - (od - obs.spot_prices[choice.zone]) * g / 3600

    def best_zone(self, obs: Observation) -> int:
        """The cheapest zone with spot now; among equals UP's choice, the first.

        With `rank_zones`, another equal-priced zone whose run the market's history (`warm`)
        expects to last twice as long is taken instead. Off by default: on the five 2023 zones
        with 1.3 h of slack and d = 0.5 h it cuts the cost from $70.07 to $53.69 a job (the best
        zone alone: $54.24), but on random tight multi-zone markets it cost up to 3 % more than
        UP (60 starts), outside the noise this policy promises.
        """
        zones = [z for z, up in enumerate(obs.available) if up]
        price = min(obs.spot_prices[z] for z in zones)
        cheapest = [z for z in zones if obs.spot_prices[z] == price]
        first = cheapest[0]
        if not self.rank_zones:
            return first
        best = max(cheapest, key=lambda z: self.residual_s(z, history=True))
        return best if self.residual_s(best, history=True) >= 2 * self.residual_s(first, history=True) else first

    def break_even_s(self, obs: Observation, zone: int) -> float:
        """How long a spot run must last to pay for the two changeovers a wrong guess costs: margin x 2kd/(k-1)."""
        k = obs.on_demand_price / max(obs.spot_prices[zone], 1e-9)
        return self.margin * 2 * k * obs.changeover_s / (k - 1) if k > 1 else float("inf")

    def worth_leaving(self, obs: Observation, choice: Decision) -> bool:
        """Leave on-demand for spot where UP's hysteresis would stay (the deviation).

        Only when what is left of the spot run is expected to outlive `margin` x the
        break-even of the two changeovers it may cost, 2kd/(k-1) with k from the prices now
        (spot is cheaper here, so k > 1), and the slack after both still holds `od_exit` x the
        line's: a wrong guess then costs at most two changeovers and leaves the job on UP's terms.
        """
        d = obs.changeover_s
        long_enough = self.residual_s(choice.zone) > self.break_even_s(obs, choice.zone)
        slack = obs.slack_s
        return (long_enough and slack - 2 * d >= self.od_exit * self.line_slack(obs) and 2 * d <= self.stake * slack
                and is_safe(obs, choice))

    def line_slack(self, obs: Observation) -> float:
        """The slack of a job exactly on UP's line ep(t) = t C/D: R (D - C) / D."""
        job = self.job
        return (job.deadline_s - job.compute_s) * obs.remaining_time_s / job.deadline_s
