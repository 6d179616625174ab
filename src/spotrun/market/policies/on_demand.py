"""On-demand only: the baseline every saving is measured against."""

from __future__ import annotations

from spotrun.market.policy import IDLE, ON_DEMAND, Decision, JobSpec, Observation


class OnDemand:
    name = "on-demand"

    def reset(self, job: JobSpec) -> None:
        pass

    def decide(self, obs: Observation) -> Decision:
        return ON_DEMAND if obs.remaining_compute_s > 0 else IDLE

    def ride(self, obs: Observation, ticks: int, cost: float) -> bool:
        return True
