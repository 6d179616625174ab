"""The policy interface shared by the simulator and the live controller.

A policy sees only the present (no trace, no future): the job's progress, the time left, what
is running, and which zones have spot capacity now. The simulator calls `decide` once per trace
tick; the controller calls it once per reconciliation pass with the same Observation, so a
policy must keep no simulator-only state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

IDLE_KIND = "idle"
SPOT_KIND = "spot"
ON_DEMAND_KIND = "on_demand"

# The paper's p3.2xlarge prices ($/h), the default market (k = 3.33).
DEFAULT_ON_DEMAND_PRICE = 3.06
DEFAULT_SPOT_PRICE = 0.918


class Decision(NamedTuple):
    """What to run for the next interval: nothing, spot in zone `zone`, or on-demand."""

    kind: str
    zone: int | None = None

    def __str__(self) -> str:
        return f"spot({self.zone})" if self.kind == SPOT_KIND else self.kind


IDLE = Decision(IDLE_KIND)
ON_DEMAND = Decision(ON_DEMAND_KIND)
_SPOT = [Decision(SPOT_KIND, z) for z in range(64)]


def spot(zone: int = 0) -> Decision:
    return _SPOT[zone] if zone < len(_SPOT) else Decision(SPOT_KIND, zone)


@dataclass(frozen=True)
class JobSpec:
    """A job with a deadline: C, D, d of the *Can't Be Late* model, in seconds, and prices in $/h."""

    compute_s: float
    deadline_s: float
    changeover_s: float
    spot_price: float = DEFAULT_SPOT_PRICE
    on_demand_price: float = DEFAULT_ON_DEMAND_PRICE

    def __post_init__(self) -> None:
        if self.compute_s <= 0:
            raise ValueError("compute time must be positive (e.g. --compute 48h)")
        if self.changeover_s <= 0:
            raise ValueError("changeover delay must be positive: every launch costs time (e.g. --changeover 0.2h)")
        if self.spot_price < 0 or self.on_demand_price < 0:
            raise ValueError("prices cannot be negative")
        if self.deadline_s < self.compute_s + self.changeover_s:
            raise ValueError(
                f"deadline {self.deadline_s / 3600:g}h is shorter than compute + one changeover "
                f"({(self.compute_s + self.changeover_s) / 3600:g}h): not even on-demand can make it; "
                "give a later deadline or a larger --job-fraction denominator"
            )

    @property
    def k(self) -> float:
        """How many times dearer on-demand is than spot."""
        return self.on_demand_price / self.spot_price if self.spot_price else float("inf")


class Observation(NamedTuple):
    """Everything a policy may know at one decision point; nothing about the future."""

    elapsed_s: float
    remaining_compute_s: float  # C(t)
    remaining_time_s: float  # R(t), time left to the deadline
    changeover_s: float  # d
    state: Decision  # what runs now (IDLE after a reclaim)
    available: tuple[bool, ...]  # spot capacity per zone now
    spot_prices: tuple[float, ...]  # $/h per zone now
    on_demand_price: float
    tick_s: float  # time until the next decision
    overhead_left_s: float = 0.0  # changeover still to pay on the running instance

    @property
    def slack_s(self) -> float:
        """Time that can still be spent not progressing: R(t) - C(t)."""
        return self.remaining_time_s - self.remaining_compute_s


class Policy(Protocol):
    """What the simulator and the controller call. A policy may also have `warm(past, gap_s)`:
    the simulator then hands it the market's availability before the start ((ticks, zones)
    bool, up to `sim.HISTORY_S`), as a cloud's spot history would; the controller does not.
    And `ride(obs, ticks, cost)`: the simulator offers to keep the running instance (past its
    changeover) for `ticks` more ticks over which the market is unchanged, the last observed
    `obs`, billed `cost` $; the policy, if it would decide to stay at each of them, updates
    itself as if it had and says True. This is how sweeps over 30-s traces stay fast."""

    name: str

    def reset(self, job: JobSpec) -> None: ...

    def decide(self, obs: Observation) -> Decision: ...


def progress_this_tick(obs: Observation, choice: Decision) -> float:
    """Compute done in the coming tick by `choice` (spot capacity holds for a whole tick)."""
    if choice.kind == IDLE_KIND:
        return 0.0
    overhead = obs.overhead_left_s if choice == obs.state else obs.changeover_s
    return max(0.0, obs.tick_s - overhead)


def is_safe(obs: Observation, choice: Decision) -> bool:
    """Can on-demand still finish in time after `choice` runs for one tick, even if spot is then gone?

    The exact Safety Net: on-demand (a new instance, so one changeover) must still fit
    after the coming tick. On-demand itself is always as safe as anything can be.
    """
    if choice.kind == ON_DEMAND_KIND:
        return True
    remaining = obs.remaining_compute_s - progress_this_tick(obs, choice)
    if remaining <= 0:
        return True
    return obs.remaining_time_s - obs.tick_s >= remaining + obs.changeover_s - 1e-6
