"""The omniscient optimum: the cheapest plan that meets the deadline, knowing the whole trace.

Exact dynamic programming over (instance running, slack used u). Slack is counted on the
coarsest grid that holds both the tick g and the changeover d (`sim.exact_grid`): u is idle
time plus d per launch, so progress after tick i is (i + 1)g - u, a running state finishes
at the one tick where that reaches C, and the deadline is u <= D - C. For each state the
cheapest cost is kept with, beside it, the spot ticks, launches and spot launches of the plan
that achieved it. It is a bound for the online policies, not a policy: it reads the future.

Two exact solvers of the same recursion:
- `tick`: one step per tick, vectorised over start ticks; best where the trace changes often.
- `segment`: one step per run of ticks with the same capacity and prices, per start. Within
  such a run an optimal plan needs only the forms "keep what ran before for a ticks, wait m,
  launch f for the rest" (a plan with a launch in the middle of the run is never cheaper:
  the launched instance either merges into the last one or ends the run instead, which moves
  its successor's launch to the next run's first tick at the same slack), so the step is a
  windowed minimum over m: O(log run) array operations instead of one per tick. On 30-second
  traces, where runs last hours, it is two orders of magnitude faster.
The tests check both against a brute-force search over every plan and against each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spotrun.market.policy import JobSpec
from spotrun.market.sim import Market, RunResult, exact_grid

NAME = "optimum"
_IDLE, _OD = 0, 1  # state indices; spot in zone z is 2 + z

# The plan's counters ride beside its cost packed in one integer, so choosing the cheaper of
# two candidates moves them with one `where`: spot ticks, launches, spot launches.
_TICK, _LAUNCH, _SPOT_LAUNCH = 1 << 32, 1 << 16, 1


def _unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return packed >> 32, (packed >> 16) & 0xFFFF, packed & 0xFFFF


def _shift(a: np.ndarray, by: int, fill: float) -> np.ndarray:
    """`a` moved `by` columns right along its last axis (more slack used), `fill` where nothing lands."""
    out = np.full_like(a, fill)
    if 0 <= by < a.shape[-1]:
        out[..., by:] = a[..., : a.shape[-1] - by]
    return out


def _cheapest(costs: list[np.ndarray], packs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    best, pack = costs[0], packs[0]
    for c, p in zip(costs[1:], packs[1:]):
        better = c < best
        best, pack = np.where(better, c, best), np.where(better, p, pack)
    return best, pack


@dataclass(frozen=True)
class _Grid:
    """The job on the exact grid: a tick is `tick` steps, d is `d` steps, u runs over `width` steps."""

    step_s: float
    tick: int
    d: int
    width: int
    c_steps: float  # C in steps (need not be whole)
    last_tick: int  # the last tick any plan can finish in

    @classmethod
    def of(cls, job: JobSpec, market: Market) -> _Grid:
        step, tick, d = exact_grid(job.changeover_s, market.gap_s)
        width = math.floor((job.deadline_s - job.compute_s) / step + 1e-9) + 1
        c_steps = job.compute_s / step
        return cls(step, tick, d, width, c_steps, math.ceil((c_steps + width - 1) / tick - 1e-9) - 1)

    def finishing(self, first: int, last: int) -> np.ndarray:
        """Slack columns whose running plans reach C during ticks first..last."""
        lo = max(0, math.floor(first * self.tick - self.c_steps + 1e-9) + 1)
        hi = min(self.width - 1, math.floor((last + 1) * self.tick - self.c_steps + 1e-9))
        return np.arange(lo, hi + 1)

    def finish_tick(self, u: np.ndarray) -> np.ndarray:
        return np.ceil((self.c_steps + u) / self.tick - 1e-9).astype(np.int64) - 1

    def unbilled(self, u: np.ndarray) -> np.ndarray:
        """The part of the finishing tick after the job ends, as a fraction of a tick."""
        return ((self.finish_tick(u) + 1) * self.tick - u - self.c_steps) / self.tick


def solve(job: JobSpec, market: Market, starts: np.ndarray, method: str | None = None) -> list[RunResult]:
    """The optimum's run for each start tick (the same RunResult the simulator gives a policy).

    `method` is `tick` or `segment`; by default the one expected to be faster on this market.
    """
    starts = np.asarray(starts, dtype=np.int64)
    last = market.ticks - market.window_ticks(job)
    if len(starts) and (starts.min() < 0 or starts.max() > last):
        raise ValueError(f"start ticks must be within 0..{last} in trace {market.name} to leave the deadline")
    grid = _Grid.of(job, market)
    prices = market.prices_at(job) * market.gap_s / 3600  # $ per tick of spot
    od_tick = job.on_demand_price * market.gap_s / 3600
    method = method or choose(grid, market)
    if method == "tick":
        best, pack, u, on_spot = _tick_dp(grid, market, prices, od_tick, starts)
    elif method == "segment":
        change = _changes(market, prices)
        rows = [_segment_dp(grid, market, prices, od_tick, int(s), change) for s in starts]
        best, pack, u, on_spot = (np.array(col) for col in zip(*rows)) if rows else (np.zeros(0),) * 4
    else:
        raise ValueError(f"unknown optimum method {method!r}: tick or segment")
    if not np.isfinite(best).all():
        raise ValueError("no plan meets the deadline (the deadline must exceed compute + changeover)")
    return _results(job, market, grid, starts, best, pack.astype(np.int64), u.astype(np.int64), on_spot.astype(bool))


def choose(grid: _Grid, market: Market) -> str:
    """The solver expected to be faster (seconds per start, measured on the bundled traces)."""
    ticks, zones = grid.last_tick + 1, market.zones
    runs = 1 + ticks * len(_changes(market, None)) / market.ticks
    tick_s = 3e-8 * ticks * grid.width * (2 + zones) ** 2 / 9
    segment_s = runs * (3e-4 + 5e-7 * grid.width) * (1 + zones) ** 2 / 4
    return "tick" if tick_s <= segment_s else "segment"


def _changes(market: Market, prices: np.ndarray | None) -> np.ndarray:
    """Ticks where capacity or a price differs from the tick before: where a run of equal ticks starts."""
    diff = (market.available[1:] != market.available[:-1]).any(axis=1)
    if prices is not None:
        diff |= (prices[1:] != prices[:-1]).any(axis=1)
    return np.flatnonzero(diff) + 1


def _results(job: JobSpec, market: Market, grid: _Grid, starts: np.ndarray, best: np.ndarray, pack: np.ndarray,
             u: np.ndarray, on_spot: np.ndarray) -> list[RunResult]:
    g, d = market.gap_s, job.changeover_s
    spot_ticks, launches, spot_launches = _unpack(pack)
    unbilled = grid.unbilled(u) * g
    results = []
    for j in range(len(starts)):
        spot_s = spot_ticks[j] * g - (unbilled[j] if on_spot[j] else 0.0)
        spot_work = spot_s - spot_launches[j] * d  # every launch of the optimum completes its changeover
        results.append(RunResult(
            policy=NAME, market=market.name, start_tick=int(starts[j]), cost=float(best[j]),
            spot_s=float(spot_s), on_demand_s=float(job.compute_s + launches[j] * d - spot_s),
            spot_work_s=float(spot_work), on_demand_work_s=float(job.compute_s - spot_work),
            finish_s=job.compute_s + u[j] * grid.step_s, met_deadline=True, changeovers=int(launches[j]),
            preemptions=None,
        ))
    return results


def _tick_dp(grid: _Grid, market: Market, prices: np.ndarray, od_tick: float, starts: np.ndarray):
    """One DP step per tick for all starts at once: arrays (starts, slack columns) per state."""
    b, z, w = len(starts), market.zones, grid.width
    n_states = 2 + z
    cost = [np.full((b, w), np.inf) for _ in range(n_states)]
    cost[_IDLE][:, 0] = 0.0
    pack = [np.zeros((b, w), dtype=np.int64) for _ in range(n_states)]
    best = np.full(b, np.inf)
    best_pack = np.zeros(b, dtype=np.int64)
    best_u = np.zeros(b, dtype=np.int64)
    best_on_spot = np.zeros(b, dtype=bool)
    for i in range(grid.last_tick + 1):
        avail = market.available[starts + i]  # (b, z)
        tick_price = prices[starts + i]
        c, p = _cheapest(cost, pack)
        new_cost, new_pack = [_shift(c, grid.tick, np.inf)], [_shift(p, grid.tick, 0)]
        for x in range(1, n_states):
            others = [s for s in range(n_states) if s != x]
            c, p = _cheapest([cost[s] for s in others], [pack[s] for s in others])
            launch_cost = _shift(c, grid.d, np.inf)
            launch_pack = _shift(p, grid.d, 0) + (_LAUNCH if x == _OD else _LAUNCH + _SPOT_LAUNCH)
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
        cols = grid.finishing(i, i)  # running plans with this slack finish during tick i
        if len(cols):
            unbilled = grid.unbilled(cols)
            for x in range(1, n_states):
                price = np.full(b, od_tick) if x == _OD else tick_price[:, x - 2]
                final = new_cost[x][:, cols] - price[:, None] * unbilled
                k = np.argmin(final, axis=1)
                final = final[np.arange(b), k]
                better = final < best
                best = np.where(better, final, best)
                best_pack = np.where(better, new_pack[x][np.arange(b), cols[k]], best_pack)
                best_u = np.where(better, cols[k], best_u)
                best_on_spot = np.where(better, x != _OD, best_on_spot)
            for c in new_cost:
                c[:, cols] = np.inf
        cost, pack = new_cost, new_pack
    return best, best_pack, best_u, best_on_spot


class _Table:
    """Windowed minima of V(y) - j*p over y = x - j*G, j in a range, for every x at once (a sparse table).

    V is laid out as (rows, G) with y = row*G + r, so a window along j is a window of rows in
    one column; each level halves the work of the next, and the pack of counters follows the
    cost through every comparison.
    """

    def __init__(self, cost: np.ndarray, pack: np.ndarray, G: int, slope: float, slope_pack: int, longest: int):
        w = len(cost)
        rows = -(-w // G)
        n_levels = min(rows, longest).bit_length()  # no window is longer than `longest` rows
        self.cost = np.full((n_levels, rows * G), np.inf)
        self.pack = np.zeros((n_levels, rows * G), dtype=np.int64)
        k = np.repeat(np.arange(rows), G)[:w]
        self.cost[0, :w] = cost + k * slope
        self.pack[0, :w] = pack + k * slope_pack
        for lv in range(1, n_levels):  # level lv: the minimum over rows [k, k + 2^lv)
            c, q, span = self.cost[lv - 1], self.pack[lv - 1], (1 << (lv - 1)) * G
            better = c[span:] < c[:-span]
            self.cost[lv] = c
            self.pack[lv] = q
            self.cost[lv, :-span] = np.where(better, c[span:], c[:-span])
            self.pack[lv, :-span] = np.where(better, q[span:], q[:-span])
        self.G, self.slope, self.slope_pack = G, slope, slope_pack

    def query(self, x: np.ndarray, j0: int, j1: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """min over j in [j0, j1] of V(x - j*G) - j*slope (inf where the window is empty or off the grid)."""
        G = self.G
        hi, r = np.divmod(x - j0 * G, G)
        lo = np.maximum(hi - (np.asarray(j1) - j0), 0)
        ok = (hi >= lo) & (hi >= 0)
        hi, lo = np.where(ok, hi, 0), np.where(ok, lo, 0)
        level = np.log2(hi - lo + 1).astype(np.int64)  # floor: spans are whole numbers
        a, b = lo * G + r, (hi - (1 << level) + 1) * G + r
        ca, cb = self.cost[level, a], self.cost[level, b]
        take_b = cb < ca
        base = hi + j0
        cost = np.where(ok, np.where(take_b, cb, ca) - base * self.slope, np.inf)
        pack = np.where(take_b, self.pack[level, b], self.pack[level, a]) - base * self.slope_pack
        return cost, pack


def _segment_dp(grid: _Grid, market: Market, prices: np.ndarray, od_tick: float, start: int, change: np.ndarray):
    """One DP step per run of equal ticks for one start: (cost, pack, slack, on spot) of its best plan."""
    w, G, D = grid.width, grid.tick, grid.d
    n_states = 2 + market.zones
    cost = [np.full(w, np.inf) for _ in range(n_states)]
    cost[_IDLE][0] = 0.0
    pack = [np.zeros(w, dtype=np.int64) for _ in range(n_states)]
    best = (np.inf, 0, 0, False)
    end = start + grid.last_tick + 1
    cuts = change[(change > start) & (change < end)]
    u = np.arange(w)
    for t0, t1 in zip(np.concatenate(([start], cuts)), np.concatenate((cuts, [end]))):
        length, rel = int(t1 - t0), int(t0 - start)
        avail = market.available[t0]
        tick_price = [0.0, od_tick, *prices[t0]]
        runnable = [_OD] + [2 + z for z in range(market.zones) if avail[z]]
        spot_ticks = [0, 0] + [_TICK] * market.zones
        launch_bits = [0, _LAUNCH] + [_LAUNCH + _SPOT_LAUNCH] * market.zones
        c_all, p_all = _cheapest(cost, pack)
        own = {e: _Table(cost[e], pack[e], G, tick_price[e], spot_ticks[e], length) for e in runnable}
        any_to = {f: _Table(c_all, p_all, G, tick_price[f], spot_ticks[f], length) for f in runnable}
        others = {f: _cheapest([cost[s] for s in range(n_states) if s != f], [pack[s] for s in range(n_states) if s != f])
                  for f in runnable}

        def run_into(f: int, cols: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Cheapest way to be running f at the end of the first n ticks of this run, slack cols."""
            pf, tf, lf = tick_price[f], spot_ticks[f], launch_bits[f]
            cands = [(cost[f][cols] + n * pf, pack[f][cols] + n * tf)]  # f kept running throughout
            oc, op = others[f]
            prev = cols - D
            ok = prev >= 0
            cands.append((np.where(ok, oc[np.where(ok, prev, 0)], np.inf) + n * pf,
                          op[np.where(ok, prev, 0)] + n * tf + lf))  # launched at once
            c, p = any_to[f].query(prev, 1, n - 1)  # after waiting j ticks, from anything
            cands.append((c + n * pf, p + n * tf + lf))
            for e in runnable:
                if e != f:  # e kept running, a wait, then f for the last tick
                    c, p = own[e].query(prev, 0, n - 1)
                    cands.append((c + (n - 1) * tick_price[e] + pf, p + (n - 1) * spot_ticks[e] + tf + lf))
            return _cheapest([x for x, _ in cands], [y for _, y in cands])

        cols = grid.finishing(rel, rel + length - 1)
        if len(cols):
            n = grid.finish_tick(cols) - rel + 1
            unbilled = grid.unbilled(cols)
            for f in runnable:
                c, p = run_into(f, cols, n)
                c = c - tick_price[f] * unbilled
                k = int(np.argmin(c))
                if c[k] < best[0]:
                    best = (float(c[k]), int(p[k]), int(cols[k]), f != _OD)
        full = np.full(w, length)
        new_cost, new_pack = [], []
        idle_c, idle_p = [_shift(c_all, length * G, np.inf)], [_shift(p_all, length * G, 0)]
        for e in runnable:  # e kept running, then a wait to the end of the run
            c, p = own[e].query(u, 1, length - 1)
            idle_c.append(c + length * tick_price[e])
            idle_p.append(p + length * spot_ticks[e])
        c, p = _cheapest(idle_c, idle_p)
        new_cost.append(c)
        new_pack.append(p)
        for x in range(1, n_states):
            if x in runnable:
                c, p = run_into(x, u, full)
            else:
                c, p = np.full(w, np.inf), np.zeros(w, dtype=np.int64)
            new_cost.append(c)
            new_pack.append(p)
        done = grid.finishing(0, rel + length - 1)
        for c in new_cost:
            c[done] = np.inf
        cost, pack = new_cost, new_pack
    return best
