"""Greedy: spot whenever any zone has it, wait otherwise; the Safety Net then moves to on-demand for good."""

from __future__ import annotations

from spotrun.market.policy import IDLE, ON_DEMAND, SPOT_KIND, Decision, JobSpec, Observation, is_safe, spot


def preferred_spot(obs: Observation) -> Decision | None:
    """Spot in the zone already running if it still has capacity, else the first zone that has."""
    if obs.state.kind == SPOT_KIND and obs.available[obs.state.zone]:
        return obs.state
    zone = next((z for z, up in enumerate(obs.available) if up), None)
    return None if zone is None else spot(zone)


class Greedy:
    name = "greedy"

    def reset(self, job: JobSpec) -> None:
        self.committed = False

    def decide(self, obs: Observation) -> Decision:
        if obs.remaining_compute_s <= 0:
            return IDLE
        choice = preferred_spot(obs) or IDLE
        if self.committed or not is_safe(obs, choice):
            self.committed = True
            return ON_DEMAND
        return choice

    def ride(self, obs: Observation, ticks: int, cost: float) -> bool:
        """Stays: committed to on-demand, or on spot while it is safe (a tick of spot work leaves the slack as it is)."""
        return self.committed or is_safe(obs, obs.state)
