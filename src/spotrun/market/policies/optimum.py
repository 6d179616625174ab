"""The omniscient optimum: the cheapest plan that meets the deadline, knowing the whole trace.

Exact dynamic programming on the simulator's own grid, vectorised over start ticks. The
state after tick i is (instance running, slack used u), where u counts idle ticks plus d
for every launch: progress is then (i + 1 - u) ticks, so a running state finishes at the one
tick where i + 1 - u = ceil(C / g), and the deadline is u <= floor((D - C) / g). For each
state we keep the cheapest cost and, beside it, the spot ticks, launches and spot launches of
the plan that achieved it. It is a bound for the online policies, not a policy: it reads the future.
"""

from __future__ import annotations

import math

import numpy as np

from spotrun.market.policy import JobSpec
from spotrun.market.sim import Market, RunResult, changeover_ticks

NAME = "optimum"
_IDLE, _OD = 0, 1  # state indices; spot in zone z is 2 + z


# The plan's counters ride beside its cost packed in one integer, so choosing the cheaper of
# two candidates moves them with one `where`: spot ticks, launches, spot launches.
_TICK, _LAUNCH, _SPOT_LAUNCH = 1 << 32, 1 << 16, 1


def _unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return packed >> 32, (packed >> 16) & 0xFFFF, packed & 0xFFFF


def _shift(a: np.ndarray, by: int, fill: float) -> np.ndarray:
    out = np.full_like(a, fill)
    if by < a.shape[1]:
        out[:, by:] = a[:, : a.shape[1] - by]
    return out


def _cheapest(costs: list[np.ndarray], packs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    best, pack = costs[0], packs[0]
    for c, p in zip(costs[1:], packs[1:]):
        better = c < best
        best, pack = np.where(better, c, best), np.where(better, p, pack)
    return best, pack


def solve(job: JobSpec, market: Market, starts: np.ndarray) -> list[RunResult]:
    """The optimum's run for each start tick (the same RunResult the simulator gives a policy)."""
    starts = np.asarray(starts, dtype=np.int64)
    g = market.gap_s
    last = market.ticks - market.window_ticks(job)
    if len(starts) and (starts.min() < 0 or starts.max() > last):
        raise ValueError(f"start ticks must be within 0..{last} in trace {market.name} to leave the deadline")
    delta = changeover_ticks(job.changeover_s, g)
    k_ticks = math.ceil(job.compute_s / g - 1e-9)
    excess = k_ticks * g - job.compute_s  # unbilled part of the final tick
    u_max = math.floor((job.deadline_s - job.compute_s) / g + 1e-9)
    b, z, w = len(starts), market.zones, u_max + 1
    n_states = 2 + z
    prices = market.prices_at(job) * g / 3600  # $ per tick of spot
    od_tick = job.on_demand_price * g / 3600

    # cost[s] and pack[s]: (starts, slack used) for each state s
    cost = [np.full((b, w), np.inf) for _ in range(n_states)]
    cost[_IDLE][:, 0] = 0.0
    pack = [np.zeros((b, w), dtype=np.int64) for _ in range(n_states)]
    best = np.full(b, np.inf)
    best_pack = np.zeros(b, dtype=np.int64)
    best_u = np.zeros(b, dtype=np.int64)
    best_on_spot = np.zeros(b, dtype=bool)

    for i in range(k_ticks + u_max):
        avail = market.available[starts + i]  # (b, z)
        tick_price = prices[starts + i]
        new_cost, new_pack = [], []
        c, p = _cheapest(cost, pack)
        new_cost.append(_shift(c, 1, np.inf))
        new_pack.append(_shift(p, 1, 0))
        for x in range(1, n_states):
            others = [s for s in range(n_states) if s != x]
            c, p = _cheapest([cost[s] for s in others], [pack[s] for s in others])
            launch_cost = _shift(c, delta, np.inf)
            launch_pack = _shift(p, delta, 0) + (_LAUNCH if x == _OD else _LAUNCH + _SPOT_LAUNCH)
            keep = cost[x] <= launch_cost
            c = np.where(keep, cost[x], launch_cost)
            p = np.where(keep, pack[x], launch_pack)
            if x == _OD:
                new_cost.append(c + od_tick)
                new_pack.append(p)
            else:
                zone = x - 2
                new_cost.append(np.where(avail[:, zone, None], c + tick_price[:, zone, None], np.inf))
                new_pack.append(p + _TICK)

        col = i + 1 - k_ticks  # running states with this slack finish during tick i
        if 0 <= col <= u_max:
            for x in range(1, n_states):
                price = od_tick if x == _OD else tick_price[:, x - 2]
                final = new_cost[x][:, col] - price * excess / g
                better = final < best
                best = np.where(better, final, best)
                best_pack = np.where(better, new_pack[x][:, col], best_pack)
                best_u = np.where(better, col, best_u)
                best_on_spot = np.where(better, x != _OD, best_on_spot)
            for c in new_cost:
                c[:, col] = np.inf
        cost, pack = new_cost, new_pack

    if not np.isfinite(best).all():
        raise ValueError("no plan meets the deadline (the deadline must exceed compute + changeover)")
    best_spot, best_launches, best_spot_launches = _unpack(best_pack)
    results = []
    for j in range(b):
        spot_s = best_spot[j] * g - (excess if best_on_spot[j] else 0.0)
        od_ticks = k_ticks + delta * best_launches[j] - best_spot[j]
        od_s = od_ticks * g - (0.0 if best_on_spot[j] else excess)
        spot_work = spot_s - best_spot_launches[j] * delta * g  # every launch of the optimum completes its changeover
        results.append(RunResult(
            policy=NAME, market=market.name, start_tick=int(starts[j]), cost=float(best[j]),
            spot_s=float(spot_s), on_demand_s=float(od_s), spot_work_s=float(spot_work),
            on_demand_work_s=float(job.compute_s - spot_work), finish_s=job.compute_s + best_u[j] * g,
            met_deadline=True, changeovers=int(best_launches[j]), preemptions=None,
        ))
    return results
