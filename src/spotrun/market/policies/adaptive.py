"""spotrun's own policy: online, multi-zone, with the exact Safety Net and learned thresholds.

What it changes against Uniform Progress:
- Slack is spent on waiting for spot down to a reserve that shrinks with the time left
  (`reserve` x the slack uniform progress would still hold), instead of running on-demand
  as soon as the job falls behind that line. Where spot has been scarce the reserve grows
  (x 1 + `scarcity` x the fraction of time without spot): there slack is worth more as
  changeovers between on-demand and the few spot runs than as waiting. The exact
  tick-level Safety Net (`is_safe`) guards the deadline, so no 2d margin is left unused.
- On-demand is left for spot whenever what is left of the spot run is expected to outlive
  the break-even of two changeovers, 2kd/(k-1) (the Next-Spot-Lifetime rule), and the slack
  after the changeover stays above `od_exit` x the reserve: a looser exit than UP's
  hysteresis, which forgoes much spot. What is left is judged from the run's age and the
  runs seen so far (`residual_s`), not from their mean: real spot runs are mostly minutes
  long with a few lasting hours, so a fresh run is a poor bet and one that has held a
  while a good one. The mean alone made it chase short runs where they are common (an
  8-node gang) and pass over long ones where runs are short on average (low availability).
- With several zones it hops to the zone with capacity whose runs have lasted longest.
Everything it learns comes from the observations, so the controller can call it live.
Defaults were tuned on the 2022 traces only (aws-10-26-2022/*); see docs/market.md.
"""

from __future__ import annotations

from spotrun.market.policy import (
    IDLE,
    ON_DEMAND,
    ON_DEMAND_KIND,
    SPOT_KIND,
    Decision,
    JobSpec,
    Observation,
    is_safe,
    spot,
)


class Adaptive:
    name = "adaptive"

    def __init__(
        self,
        reserve: float = 0.6,
        od_exit: float = 0.6,
        prior_lifetime_s: float = 3 * 3600,
        prior_weight: float = 1.0,
        scarcity: float = 1.0,
    ):
        self.reserve = reserve
        self.od_exit = od_exit
        self.prior_lifetime_s = prior_lifetime_s
        self.prior_weight = prior_weight
        self.scarcity = scarcity

    def reset(self, job: JobSpec) -> None:
        self.job = job
        self.up_s: list[float] = []  # time with spot per zone
        self.age_s: list[float] = []  # how long each zone's current run has lasted
        self.runs: list[list[float]] = []  # the lengths of each zone's ended runs
        self.last: tuple[bool, ...] = ()
        self.seen_s = 0.0

    def _observe(self, obs: Observation) -> None:
        if len(self.up_s) != len(obs.available):
            self.up_s = [0.0] * len(obs.available)
            self.age_s = [0.0] * len(obs.available)
            self.runs = [[] for _ in obs.available]
            self.last = obs.available
        for z, up in enumerate(obs.available):
            if up:
                self.up_s[z] += obs.tick_s
                self.age_s[z] += obs.tick_s
            elif self.last[z]:
                self.runs[z].append(self.age_s[z])
                self.age_s[z] = 0.0
        self.last = obs.available
        self.seen_s += obs.tick_s

    def availability(self) -> float:
        """Fraction of the time seen with spot in the best zone, shrunk towards 1/2 early on."""
        prior_s = self.prior_lifetime_s
        return (max(self.up_s) + prior_s / 2) / (self.seen_s + prior_s)

    def lifetime_s(self, zone: int) -> float:
        """Mean spot run length seen in `zone`, shrunk towards a prior while few runs have ended."""
        w = self.prior_weight
        return (self.up_s[zone] + w * self.prior_lifetime_s) / (len(self.runs[zone]) + w)

    def residual_s(self, zone: int) -> float:
        """Expected time left of the zone's current spot run, given how long it has lasted.

        Spot runs are far from memoryless: most end within minutes, but one that has held a
        while tends to hold much longer. So the ended runs that lasted at least the current
        one's age (it holds through this tick, which the age already counts) say how long it
        will go on, shrunk towards the prior while few have.
        """
        age, w = self.age_s[zone], self.prior_weight
        longer = [r - age for r in self.runs[zone] if r >= age - 1e-6]
        return (sum(longer) + w * self.prior_lifetime_s) / (len(longer) + w)

    def decide(self, obs: Observation) -> Decision:
        self._observe(obs)
        if obs.remaining_compute_s <= 0:
            return IDLE
        state = obs.state
        if state.kind == SPOT_KIND and obs.available[state.zone]:
            return state if is_safe(obs, state) else ON_DEMAND
        job = self.job
        scale = self.reserve * (1 + self.scarcity * (1 - self.availability()))
        reserve = scale * (job.deadline_s - job.compute_s) * obs.remaining_time_s / job.deadline_s
        zones = [z for z, up in enumerate(obs.available) if up]
        if zones:
            choice = spot(max(zones, key=self.lifetime_s))
            if is_safe(obs, choice):
                if state.kind != ON_DEMAND_KIND:
                    return choice
                k, d = job.k, obs.changeover_s
                worth = self.residual_s(choice.zone) > 2 * k * d / (k - 1) if k > 1 else False
                floor = max(self.od_exit * reserve, 2 * d + obs.tick_s)
                if worth and obs.slack_s - d >= floor:
                    return choice
        if state.kind == ON_DEMAND_KIND:
            return ON_DEMAND
        if is_safe(obs, IDLE) and obs.slack_s - obs.tick_s >= reserve:
            return IDLE
        return ON_DEMAND
