"""How often to checkpoint on spot, and what spot saves, from the reclaim rate.

Young (1974): interval = sqrt(2 * delta * M), delta the checkpoint write time and M the mean
time between reclaims. Daly (2006) adds the higher-order terms that matter when delta is not
small against M. Lost work per reclaim is taken as half an interval (reclaims land uniformly
between checkpoints); a reclaim notice that triggers a final flush only makes it smaller.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def young_interval(write_s: float, mtbf_s: float) -> float:
    return math.sqrt(2 * write_s * mtbf_s)


def daly_interval(write_s: float, mtbf_s: float) -> float:
    if write_s >= 2 * mtbf_s:
        return mtbf_s
    x = write_s / (2 * mtbf_s)
    return math.sqrt(2 * write_s * mtbf_s) * (1 + math.sqrt(x) / 3 + x / 9) - write_s


@dataclass(frozen=True)
class Advice:
    checkpoint_write_s: float
    reclaims_per_hour: float
    mtbf_hours: float
    young_interval_s: float
    daly_interval_s: float
    checkpoint_overhead_s_per_hour: float  # writing checkpoints at Daly's interval
    work_lost_s_per_hour: float  # redone after reclaims, half an interval each
    waste_fraction: float  # of each running hour
    job_hours: float | None = None
    instance_type: str | None = None
    spot_price: float | None = None
    on_demand_price: float | None = None
    spot_cost: float | None = None  # the job on spot, waste and restarts included
    on_demand_cost: float | None = None
    saving: float | None = None
    saving_fraction: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def advise(
    write_s: float,
    reclaims_per_hour: float,
    job_hours: float | None = None,
    prices: tuple[float, float] | None = None,
    restart_s: float = 0.0,
    instance_type: str | None = None,
) -> Advice:
    """The interval to checkpoint at and its costs; with a job and (spot, on-demand) prices, the saving."""
    if write_s <= 0:
        raise ValueError("checkpoint write time must be positive (e.g. --checkpoint-time 30s)")
    if reclaims_per_hour <= 0:
        raise ValueError("reclaims per hour must be positive (measure it from a trace with --trace)")
    if restart_s < 0:
        raise ValueError("restart time cannot be negative")
    mtbf_s = 3600 / reclaims_per_hour
    interval = daly_interval(write_s, mtbf_s)
    overhead = 3600 * write_s / (interval + write_s)
    lost = reclaims_per_hour * (interval / 2 + restart_s)
    waste = min(1.0, (overhead + lost) / 3600)
    extra: dict = {}
    if job_hours is not None:
        if job_hours <= 0:
            raise ValueError("job hours must be positive")
        if prices is None:
            raise ValueError("a saving needs prices: give --instance-type (see `spotrun prices`)")
        spot, on_demand = prices
        if spot < 0 or on_demand < 0:
            raise ValueError("prices cannot be negative")
        spot_cost = math.inf if waste >= 1 else spot * job_hours / (1 - waste)
        od_cost = on_demand * job_hours
        extra = dict(
            job_hours=job_hours, instance_type=instance_type, spot_price=spot, on_demand_price=on_demand,
            spot_cost=spot_cost, on_demand_cost=od_cost, saving=od_cost - spot_cost,
            saving_fraction=(od_cost - spot_cost) / od_cost if od_cost else None,
        )
    return Advice(
        checkpoint_write_s=write_s, reclaims_per_hour=reclaims_per_hour, mtbf_hours=mtbf_s / 3600,
        young_interval_s=young_interval(write_s, mtbf_s), daly_interval_s=interval,
        checkpoint_overhead_s_per_hour=overhead, work_lost_s_per_hour=lost, waste_fraction=waste, **extra,
    )
