"""`SimProvider`: instances as in-memory state machines, thousands at the cost of a dict.

No process, no machine: an instance is a few timestamps fixed at launch (when it is booted,
when the market sends its notice, when it is gone, when its job's work is done) and its state
is read off them against a clock. So `launch` and `terminate` are O(1), `list_instances` is one
pass over the fleet with nothing per instance but that comparison, and the same provider
serves a scale test in wall time or a week-long sweep in virtual time (`clock.VirtualClock`).

Work survives an instance as a perfect checkpoint would: a job's next attempt starts where the
last one stopped (the simulator's model), and finishes with the exit status its spec asks
(`sim: {work: 2h, exit_code: 0}`); a job with no `work` runs until stopped or reclaimed.
Everything is lost with the process: a restarted controller finds its instances GONE and
relaunches them, as it would after losing a cloud's instances.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from spotrun.durations import parse_duration
from spotrun.providers.base import ENDED, Instance, InstanceState, LaunchRefused, LaunchRequest
from spotrun.providers.local.market import prices as table_prices
from spotrun.providers.sim.clock import Clock, RealClock
from spotrun.providers.sim.config import SimConfig


@dataclass(slots=True)
class _Sim:
    """One instance's fate, fixed at launch; `state` is read off it by `_advance`."""

    id: str
    token: str
    job_id: str
    attempt: int
    spot: bool
    zone: str
    instance_type: str | None
    price: float
    owner: str | None
    launched_at: float
    ready_at: float  # booted: the agent runs the job from here
    work_before: float  # the job's work already done when this attempt started
    finish_at: float | None  # its work is done, the agent exits with `exit_code`
    exit_code: int
    notice_at: float | None = None
    gone_at: float | None = None  # notice_at + the lead: the market takes it
    state: InstanceState = InstanceState.PENDING
    ended_at: float | None = None
    returncode: int | None = None
    view: Instance | None = None  # the Instance last handed out, rebuilt only when the state moves


def _gone(instance_id: str) -> Instance:
    return Instance(id=instance_id, token="", job_id="", attempt=0, state=InstanceState.GONE, spot=False)


def _job_settings(cloud: dict[str, Any]) -> tuple[float | None, int]:
    """(work in seconds or None, exit status) from the spec's `sim:` section."""
    sim = cloud.get("sim") or {}
    work = sim.get("work")
    return (None if work is None else parse_duration(work)), int(sim.get("exit_code", 0))


class SimProvider:
    name = "sim"

    def __init__(self, config: SimConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or SimConfig()
        self.market = self.config.market
        self.clock = clock or RealClock()
        self.epoch = self.market.trace_epoch if self.market.trace_epoch is not None else self.clock.time()
        self.calls: Counter[str] = Counter()  # provider calls by name, for benchmarks
        self._fleet: dict[str, _Sim] = {}
        self._by_token: dict[str, str] = {}
        self._by_job: dict[str, list[str]] = {}
        self._work_done: dict[str, float] = {}  # job -> seconds of work its attempts have done
        self._ids = itertools.count(1)
        self._table: dict[str | None, tuple[float, float]] = {}  # instance type -> the bundled table's prices

    # --- the state machine ---------------------------------------------------------------

    def _advance(self, rec: _Sim, now: float) -> None:
        if rec.ended_at is not None:
            return
        finish, gone = rec.finish_at, rec.gone_at
        if finish is not None and finish <= now and (gone is None or finish <= gone):  # done inside the notice: exit wins
            self._end(rec, InstanceState.EXITED, finish, rec.exit_code)
            return
        if gone is not None and gone <= now:
            self._end(rec, InstanceState.RECLAIMED, gone)
            return
        if rec.notice_at is not None and rec.notice_at <= now:
            state = InstanceState.NOTICE
        else:
            state = InstanceState.RUNNING if now >= rec.ready_at else InstanceState.PENDING
        if state is not rec.state:
            rec.state, rec.view = state, None

    def _end(self, rec: _Sim, state: InstanceState, at: float, returncode: int | None = None) -> None:
        rec.state, rec.ended_at, rec.returncode, rec.view = state, at, returncode, None
        ran = max(0.0, at - rec.ready_at)
        if rec.finish_at is not None:
            ran = min(ran, rec.finish_at - rec.ready_at)
        self._work_done[rec.job_id] = rec.work_before + ran

    def _view(self, rec: _Sim, now: float) -> Instance:
        self._advance(rec, now)
        if rec.view is None:
            rec.view = Instance(
                id=rec.id, token=rec.token, job_id=rec.job_id, attempt=rec.attempt, state=rec.state, spot=rec.spot,
                zone=rec.zone, instance_type=rec.instance_type, price_per_hour=rec.price, launched_at=rec.launched_at,
                ended_at=rec.ended_at, returncode=rec.returncode, owner=rec.owner,
            )
        return rec.view

    # --- the Provider interface -----------------------------------------------------------

    def _zone(self, zone: str | None) -> str:
        zone = zone or self.market.default_zone()
        traced = self.market.traced_zones()
        if traced is not None and zone not in traced:
            raise ValueError(f"zone {zone!r} has no trace in the sim market (zones: {', '.join(traced)}): "
                             "check resources.zones")
        return zone

    async def launch(self, request: LaunchRequest) -> Instance:
        self.calls["launch"] += 1
        now = self.clock.time()
        found = self._by_token.get(request.token)
        if found is not None:  # a repeated launch: the same instance
            return self._view(self._fleet[found], now)
        zone = self._zone(request.zone)
        try:
            work, exit_code = _job_settings(request.cloud)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"sim: {exc}") from None
        spot_price, od_price = self.prices(request.instance_type, zone)
        notice_at = None
        if request.spot:
            if not self.market.available(zone, now, self.epoch):
                raise LaunchRefused(f"no spot capacity in {zone} now (the trace says 0); retry later")
            if request.max_price is not None and spot_price > request.max_price:
                raise LaunchRefused(f"spot price ${spot_price:.3f}/h is above the max price ${request.max_price:.3f}/h")
            notice_at = self.market.notice_at(request.token, zone, now, self.epoch)
        ready_at = now + self.config.boot_s
        done = self._work_done.get(request.job_id, 0.0)
        rec = _Sim(
            id=f"sim-{next(self._ids):08d}", token=request.token, job_id=request.job_id, attempt=request.attempt,
            spot=request.spot, zone=zone, instance_type=request.instance_type,
            price=spot_price if request.spot else od_price, owner=request.owner, launched_at=now, ready_at=ready_at,
            work_before=done, finish_at=None if work is None else ready_at + max(0.0, work - done), exit_code=exit_code,
            notice_at=notice_at, gone_at=None if notice_at is None else notice_at + self.market.notice_lead_s,
        )
        self._fleet[rec.id] = rec
        self._by_token[rec.token] = rec.id
        self._by_job.setdefault(rec.job_id, []).append(rec.id)
        return self._view(rec, now)

    async def query(self, instance_id: str) -> Instance:
        self.calls["query"] += 1
        rec = self._fleet.get(instance_id)
        return _gone(instance_id) if rec is None else self._view(rec, self.clock.time())

    async def list_instances(self, job_id: str | None = None) -> list[Instance]:
        self.calls["list_instances"] += 1
        now = self.clock.time()
        if job_id is not None:
            return [self._view(self._fleet[i], now) for i in self._by_job.get(job_id, ())]
        self._forget(now)
        return [self._view(rec, now) for rec in self._fleet.values()]

    def _forget(self, now: float) -> None:
        """Drop instances that ended over `retain_s` ago, so a long run's memory stays the fleet's size."""
        horizon = now - self.config.retain_s
        old = [rec for rec in self._fleet.values() if rec.ended_at is not None and rec.ended_at < horizon]
        for rec in old:
            del self._fleet[rec.id]
            del self._by_token[rec.token]
            ids = self._by_job[rec.job_id]
            ids.remove(rec.id)
            if not ids:
                del self._by_job[rec.job_id]

    async def terminate(self, instance_id: str) -> None:
        self.calls["terminate"] += 1
        rec = self._fleet.get(instance_id)
        if rec is None:
            return
        now = self.clock.time()
        self._advance(rec, now)
        if rec.state not in ENDED:
            self._end(rec, InstanceState.TERMINATED, now)

    async def interrupt(self, instance_id: str, lead_s: float | None = None) -> None:
        """The market's notice now, the instance gone `lead_s` later (default the market's lead)."""
        rec = self._fleet.get(instance_id)
        if rec is None:
            raise ValueError(f"no sim instance {instance_id} in this process: sim instances live in the memory of the "
                             "controller that launched them, so only its market (trace, rate) reclaims them")
        if not rec.spot:
            raise ValueError(f"{instance_id} is on-demand: only spot instances are reclaimed")
        now = self.clock.time()
        self._advance(rec, now)
        if rec.state in ENDED:
            raise ValueError(f"{instance_id} is {rec.state.value}, not running: nothing to interrupt")
        lead = self.market.notice_lead_s if lead_s is None else lead_s
        rec.notice_at = min(now, rec.notice_at if rec.notice_at is not None else math.inf)
        rec.gone_at = min(now + lead, rec.gone_at if rec.gone_at is not None else math.inf)
        self._advance(rec, now)

    def prices(self, instance_type: str | None, zone: str | None) -> tuple[float, float]:
        """Spot: the zone's own price, else the trace's at this tick, else the settings' or the
        bundled table's for the type; on-demand: the settings' or the table's."""
        zone = zone or self.market.default_zone()
        if instance_type not in self._table:  # asked per job per pass: the table is read once per type
            self._table[instance_type] = table_prices(self.market.cloud, instance_type)
        spot, od = self._table[instance_type]
        spot = self.config.spot_price if self.config.spot_price is not None else spot
        traced = self.market.price(zone, self.clock.time(), self.epoch)
        spot = self.config.zone_prices.get(zone, traced if traced is not None else spot)
        return spot, self.config.on_demand_price if self.config.on_demand_price is not None else od

    def spot_available(self, instance_type: str | None, zone: str | None) -> bool:
        """What a spot launch would meet now: the same check `launch` makes."""
        return self.market.available(zone or self.market.default_zone(), self.clock.time(), self.epoch)
