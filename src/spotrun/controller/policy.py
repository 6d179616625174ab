"""Deadline-aware capacity for `spot: auto` jobs: the market's policies, asked live each pass.

The controller builds the same `Observation` the simulator builds, from the database (the
job's attempts) and the provider (spot availability per zone now, prices), so the policies in
`spotrun.market.policies` run unchanged. Compute done is estimated from run time: each
attempt's time on an instance minus one changeover (boot, restore), assuming the job keeps its
work through checkpoints. A job that outlives its estimate is treated as one tick from done, so
a policy never idles a job that has not finished. One Policy lives in memory per job; after a
controller restart it is rebuilt with `reset()`, which loses only what it had learned about
availability (policies are online).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from spotrun.controller.models import Attempt, Job
from spotrun.controller.spec import JobSpec
from spotrun.market import policies
from spotrun.market.policy import (
    IDLE,
    ON_DEMAND,
    ON_DEMAND_KIND,
    SPOT_KIND,
    Decision,
    Observation,
    Policy,
    is_safe,
    spot,
)
from spotrun.market.policy import JobSpec as MarketJob
from spotrun.providers.base import Provider, spot_available


@dataclass
class _Live:
    policy: Policy
    last_at: float  # when it last decided: the length of the tick it saw
    last: Decision | None = None  # the last decision recorded in the job's timeline
    switch_to: Decision | None = None  # a move off the running attempt it chose at `last_at`


def policy_name(spec: JobSpec) -> str:
    return spec.resources.policy or "adaptive"


def zones(spec: JobSpec) -> list[str | None]:
    """The zones a policy picks among, by index; None is the provider's default zone."""
    return list(spec.resources.zones) or [None]


def zone_of(spec: JobSpec, decision: Decision) -> str | None:
    return zones(spec)[decision.zone] if decision.kind == SPOT_KIND else None


def capacity(spec: JobSpec, att: Attempt) -> Decision:
    """What an attempt runs on, as a policy names it."""
    if not att.spot:
        return ON_DEMAND
    names = zones(spec)
    return spot(names.index(att.zone) if att.zone in names else 0)


def compute_done(attempts: list[Attempt], changeover_s: float, now: float) -> float:
    """Seconds of the job's compute done: run time on instances, less one changeover each."""
    return sum(
        max(0.0, (a.ended_at or now) - a.started_at - changeover_s)
        for a in attempts
        if a.instance_id is not None and a.started_at is not None
    )


class Planner:
    """Asks each deadline-aware job's policy what to run next; one Policy per job, in memory."""

    def __init__(self, interval: float):
        self.interval = interval
        self._live: dict[str, _Live] = {}

    def keep_only(self, job_ids: set[str]) -> None:
        """Drop the policies of jobs this controller no longer drives (finished, leased away)."""
        for job_id in set(self._live) - job_ids:
            del self._live[job_id]

    def observe(self, job: Job, spec: JobSpec, attempts: list[Attempt], current: Attempt | None,
                provider: Provider, now: float) -> tuple[Observation, MarketJob]:
        res = spec.resources
        names = zones(spec)
        prices = [provider.prices(res.instance_types[0], z) for z in names]
        market_job = MarketJob(res.compute, spec.recovery.deadline, res.changeover, prices[0][0], prices[0][1])
        live = self._live.get(job.id)
        tick_s = max(self.interval, now - live.last_at) if live else self.interval
        running = current is not None and current.instance_id is not None
        started = current.started_at if running and current.started_at is not None else now
        elapsed = now - job.submitted_at
        obs = Observation(
            elapsed_s=elapsed,
            remaining_compute_s=max(tick_s, res.compute - compute_done(attempts, res.changeover, now)),
            remaining_time_s=spec.recovery.deadline - elapsed,
            changeover_s=res.changeover,
            state=capacity(spec, current) if running else IDLE,
            available=tuple(spot_available(provider, res.instance_types[0], z) is not False for z in names),
            spot_prices=tuple(p[0] for p in prices),
            on_demand_price=prices[0][1],
            tick_s=tick_s,
            overhead_left_s=max(0.0, res.changeover - (now - started)) if running else 0.0,
        )
        return obs, market_job

    def decide(self, job: Job, spec: JobSpec, attempts: list[Attempt], current: Attempt | None,
               provider: Provider) -> tuple[Decision, Observation]:
        """The policy's choice, overruled by the Safety Net: on-demand whenever only it still fits.

        The relaunch that follows a switch within the same interval (its stop was over at once)
        launches what the switch chose, without asking again: a policy that learns from each
        observation (adaptive) would otherwise count that interval twice.
        """
        now = time.time()
        obs, market_job = self.observe(job, spec, attempts, current, provider, now)
        live = self._live.get(job.id)
        running = current is not None and current.instance_id is not None
        if live is not None and live.switch_to is not None and not running and now - live.last_at < self.interval:
            choice, live.switch_to = live.switch_to, None
            return choice, obs
        if live is None:
            policy = policies.make(policy_name(spec))
            policy.reset(market_job)
            live = self._live[job.id] = _Live(policy, now)
        choice = live.policy.decide(obs)
        if choice.kind != ON_DEMAND_KIND and not is_safe(obs, choice):
            choice = ON_DEMAND
        live.last_at = now
        live.switch_to = choice if running and choice not in (IDLE, capacity(spec, current)) else None
        return choice, obs

    def is_news(self, job_id: str, decision: Decision) -> bool:
        """Whether `decision` differs from the last one recorded for the job (then remember it)."""
        live = self._live[job_id]
        news, live.last = live.last != decision, decision
        return news


def label(spec: JobSpec, decision: Decision) -> str:
    """A decision in the user's words: `wait for spot`, `on-demand`, `spot in us-east-1a`."""
    if decision.kind == SPOT_KIND:
        zone = zone_of(spec, decision)
        return f"spot in {zone}" if zone else "spot"
    return "wait for spot" if decision == IDLE else "on-demand"


def describe(spec: JobSpec, decision: Decision, obs: Observation) -> str:
    """One timeline line: what the policy chose and the numbers it saw."""
    up = sum(obs.available)
    return (
        f"policy {policy_name(spec)}: {label(spec, decision)} "
        f"(compute left ~{obs.remaining_compute_s:.0f}s, time left {obs.remaining_time_s:.0f}s, "
        f"spot in {up}/{len(obs.available)} zones)"
    )
