"""Uniform Progress (*Can't Be Late*, NSDI '24), as in the paper's reference `rc_cr_threshold`.

Rules: take spot whenever available (Taking Risks); when idle and behind the uniform progress
line ep(t) = t * C0 / R0, run on-demand to catch up; once on on-demand stay until ahead of
ep(t + 2d) (Hysteresis); deadline checks in whole ticks: with ceil((C + 2d) / gap) ticks no
longer left, idle or on-demand goes on-demand, and with ceil((C + d) / gap) no longer left
only a spot instance already past its changeover may stay (Safety Net).
"""

from __future__ import annotations

import math

from spotrun.market.policies.greedy import preferred_spot
from spotrun.market.policy import IDLE, IDLE_KIND, ON_DEMAND, ON_DEMAND_KIND, SPOT_KIND, Decision, JobSpec, Observation


class UniformProgress:
    name = "up"

    def reset(self, job: JobSpec) -> None:
        self.job = job

    def decide(self, obs: Observation) -> Decision:
        c = obs.remaining_compute_s
        if c <= 1e-3:
            return IDLE
        job, g, d, t = self.job, obs.tick_s, obs.changeover_s, obs.elapsed_s
        c0, r0 = job.compute_s, job.deadline_s
        done = c0 - c
        spot_choice = preferred_spot(obs)
        choice = spot_choice or IDLE
        if done - t * c0 / r0 < 0:  # behind uniform progress
            choice = spot_choice or ON_DEMAND
        if obs.state.kind == ON_DEMAND_KIND and (spot_choice is None or (t + 2 * d) * c0 / r0 - done >= 0):
            choice = ON_DEMAND  # hysteresis: leave on-demand only when ahead of ep(t + 2d)
        left = math.floor(obs.remaining_time_s / g + 1e-9) * g
        if math.ceil((c + 2 * d) / g - 1e-9) * g >= left and obs.state.kind in (IDLE_KIND, ON_DEMAND_KIND):
            choice = ON_DEMAND
        if math.ceil((c + d) / g - 1e-9) * g >= left:
            on_spot = obs.state.kind == SPOT_KIND and obs.available[obs.state.zone] and obs.overhead_left_s < 1e-3
            choice = obs.state if on_spot else ON_DEMAND
        return choice

    def ride(self, obs: Observation, ticks: int, cost: float) -> bool:
        """Stays on a spot instance while it has capacity, and on on-demand while no zone has spot.

        On on-demand with spot about, the hysteresis line moves every tick, so it does not ride.
        """
        return obs.state.kind == SPOT_KIND or not any(obs.available)
