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
  seen (`residual_s`), shrunk towards a prior of 2 h.
- The ledger (the hedge): the policy replays UP itself on the same observations (a shadow
  job: UP's decisions, progress and bill, which need nothing a live job does not see) and
  keeps the score: UP's bill minus its own, less the compute it lags UP valued at the
  on-demand price. A deviation is taken only while the score, after the deviation's worst
  case (the run dies after one tick), stays above -`budget` x a floor of UP's bill.
  Deviations that lose stop by themselves, and a job that has not gained never risks more
  than the budget on one.
- Behind the shadow (after a failed deviation) it does what the shadow does, not what UP's
  rules say on its own state (`follow`), and makes up the lag on on-demand while the shadow
  waits for spot: UP's rules on a lagging state meet the Safety Net first and finish on
  on-demand while UP rides spot, which costs far more than the lag at on-demand price.
- Spot dearer than on-demand is never launched; with several zones it launches in the
  cheapest zone with capacity; among equals UP's choice, the first, unless the evidence
  (hours of spot per reclaim, in the market's history and since the start) says clearly that
  another's runs last longer (`best_zone`). It never hops while the running zone has capacity,
  so a job launches at most once per reclaim or deviation.
Everything it learns comes from the observations, so the controller can call it live.
Parameters were chosen on the stress grid, the paper set-up and synthetic markets; see
docs/market.md for the cost against UP in every cell.
"""

from __future__ import annotations

import numpy as np

from spotrun.market.policies.uniform_progress import UniformProgress
from spotrun.market.policy import IDLE, IDLE_KIND, ON_DEMAND, ON_DEMAND_KIND, SPOT_KIND, Decision, JobSpec, Observation, is_safe, spot
from spotrun.market.sim import Run


class Adaptive:
    name = "adaptive"

    def __init__(
        self,
        od_exit: float = 0.6,
        prior_lifetime_s: float = 7200,
        prior_weight: float = 1.0,
        margin: float = 1.5,
        budget: float = 0.015,
        stake: float = 0.2,
        evidence: float = 2.0,
        catch_lag: float = 0.5,
        catch_gap: float = 2.0,
        catch_now: float = 0.75,
    ):
        self.catch_lag = catch_lag
        self.catch_gap = catch_gap
        self.catch_now = catch_now
        self.evidence = evidence
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
        self.gap_s = 0.0  # how long no zone has had spot

    def warm(self, past: np.ndarray, gap_s: float) -> None:
        """Learn the zones' runs from the market before the start ((ticks, zones) bool), when known.

        Used to rank zones (`best_zone`), not for the deviation, which was measured on what a
        job sees itself: with history it deviated more and lost (up to +0.8 % against UP at
        d = 0.5 h, C = 100 h).
        """
        self._start(past.shape[1])
        if len(past):
            self.held_s = list(past.sum(axis=0) * gap_s)
            self.reclaims = list((past[:-1] & ~past[1:]).sum(axis=0))
            self.last = tuple(bool(x) for x in past[-1])

    def _start(self, zones: int) -> None:
        self.age_s = [0.0] * zones  # how long each zone's current run has lasted in the job
        self.runs: list[list[float]] = [[] for _ in range(zones)]  # each zone's ended runs in the job
        self.held_s = [0.0] * zones  # time each zone had spot, the history before the start too
        self.reclaims = [0] * zones  # and how often its spot ended
        self.last = (False,) * zones

    def _observe(self, obs: Observation) -> None:
        self.gap_s = 0.0 if any(obs.available) else self.gap_s + obs.tick_s
        if len(self.age_s) != len(obs.available):
            self._start(len(obs.available))
            self.last = obs.available
        for z, up in enumerate(obs.available):
            if up:
                self.age_s[z] += obs.tick_s
                self.held_s[z] += obs.tick_s
            elif self.last[z]:
                self.runs[z].append(self.age_s[z])
                self.reclaims[z] += 1
                self.age_s[z] = 0.0
        self.last = obs.available

    def residual_s(self, zone: int) -> float:
        """Expected time left of the zone's current spot run, given how long it has lasted.

        Spot runs are far from memoryless: most end within minutes, but one that has held a
        while tends to hold much longer. So the ended runs that lasted at least the current
        one's age (it holds through this tick, which the age already counts) say how long it
        will go on, shrunk towards the prior while few have.
        """
        age, runs = self.age_s[zone], self.runs[zone]
        w = self.prior_weight
        longer = [r - age for r in runs if r >= age - 1e-6]
        return (sum(longer) + w * self.prior_lifetime_s) / (len(longer) + w)

    def score(self, obs: Observation) -> float:
        """$ ahead of UP so far: UP's bill minus ours, less the compute we lag it, at on-demand price."""
        return self.shadow_run.cost - self.own_run.cost - self.lag_s(obs) * obs.on_demand_price / 3600

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
        together = seen is obs and up_obs == obs
        up_choice = choice if together else self.baseline.decide(up_obs)
        if not together and up.finish_s is None and self.lag_s(obs) > 0:
            choice = self.follow(obs, seen, up_choice, choice)
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

    def ride(self, obs: Observation, ticks: int, cost: float) -> bool:
        """Stays where UP would and the exact Safety Net holds (a tick of work leaves the slack as
        it is), while the shadow UP can ride the same ticks too; the ledger and the zones' runs
        move on as if decided tick by tick."""
        up = self.shadow_run
        if up.finish_s is None:
            up_obs = obs._replace(remaining_compute_s=up.remaining, state=up.state, overhead_left_s=up.overhead)
            if (up.state.kind == IDLE_KIND or up.overhead > 0 or up.remaining <= ticks * obs.tick_s
                    or not self.baseline.ride(up_obs, ticks, 0.0)):
                return False
        cheap = any(a and p < obs.on_demand_price for a, p in zip(obs.available, obs.spot_prices))
        stays = obs.state.kind == SPOT_KIND or not cheap
        if not (stays and is_safe(obs, obs.state)):
            return False
        if up.finish_s is None:
            price = obs.on_demand_price if up.state.kind == ON_DEMAND_KIND else obs.spot_prices[up.state.zone]
            up.ride(ticks, obs.tick_s, price * ticks * obs.tick_s / 3600)
        self.own_run.ride(ticks, obs.tick_s, cost)
        span = ticks * obs.tick_s
        self.gap_s = 0.0 if any(obs.available) else self.gap_s + span
        for z, a in enumerate(obs.available):
            if a:
                self.age_s[z] += span
                self.held_s[z] += span
        return True

    def lag_s(self, obs: Observation) -> float:
        """How far behind the shadow UP the job is, in compute and changeover still to do."""
        up = self.shadow_run
        return obs.remaining_compute_s + obs.overhead_left_s - up.remaining - up.overhead

    def follow(self, obs: Observation, seen: Observation, up_choice: Decision, own: Decision) -> Decision:
        """Behind the shadow UP, do what it does rather than what UP's rules say on the job's own state.

        A job that lags after a failed deviation and applies UP's rules to its own state meets
        its Safety Net first, and finishes on on-demand while UP rides spot to the end (+31 %
        on one start at the paper set-up). So it keeps a spot run that has capacity and takes
        spot where the shadow does. Lag shrinks only while the shadow makes no progress, so it
        makes up a lag of `catch_lag` x d or more on on-demand while the shadow waits for spot
        and its own slack is below the line's: at once below `catch_now` x the line's, else
        once no zone has had spot for `catch_gap` x d (catching up in shorter gaps pays a
        changeover for little work).
        """
        if obs.state.kind == SPOT_KIND and seen.available[obs.state.zone]:
            return obs.state
        if up_choice.kind == SPOT_KIND:
            return up_choice if seen.available[up_choice.zone] else own
        d, slack, line = obs.changeover_s, obs.slack_s, self.line_slack(obs)
        urgent = obs.state == ON_DEMAND or self.gap_s >= self.catch_gap * d or slack < self.catch_now * line
        if up_choice == IDLE and self.lag_s(obs) >= self.catch_lag * d and slack < line and urgent:
            return ON_DEMAND
        return up_choice

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
        """Where to launch spot: UP's zone (the first with capacity) unless the evidence is clear.

        The cheapest zone (among equals the longest-lived) is taken instead when it is cheaper
        and its runs are not clearly shorter, or equal-priced and its runs clearly longer.
        "Clearly": the mean runs (`life_s`, time held per reclaim in the week before the start
        and since) compared with the reclaim counts `evidence` Poisson deviations apart, in the
        other's favour. On the five 2023 zones with 1.3 h of slack and d = 0.5 h this is what
        makes the market cheaper than its best zone alone (the first zone's runs are short).
        Weaker rules lost against UP on random multi-zone markets, where a week holds few
        runs: the longest mean run up to +17 %, a 2x margin on the age-conditioned residual
        +0.8 %, the cheapest zone whatever its runs +1.5 % (docs/market.md, multi-zone).
        """
        zones = [z for z, up in enumerate(obs.available) if up]
        first, ev = zones[0], self.evidence
        price = min(obs.spot_prices[z] for z in zones)
        best = max((z for z in zones if obs.spot_prices[z] == price), key=self.life_s)
        if obs.spot_prices[best] < obs.spot_prices[first]:  # cheaper: unless its runs are clearly shorter
            return best if self.life_s(best, -ev) >= self.life_s(first, ev) else first
        return best if self.life_s(best, ev) >= self.life_s(first, -ev) else first

    def life_s(self, zone: int, sigmas: float = 0.0) -> float:
        """A zone's mean spot run: time held per reclaim, with the count `sigmas` Poisson deviations higher.

        The run going on counts as one reclaim to come, so a zone never seen reclaimed is not
        taken to last forever, and one seen briefly is not taken for a long one.
        """
        n = self.reclaims[zone] + 1
        return self.held_s[zone] / max(n + sigmas * n ** 0.5, 0.5)

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
