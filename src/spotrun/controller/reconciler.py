"""The reconciler: one asyncio loop that drives every job from desired to observed state.

Level-triggered: each pass reads the database and the provider afresh and takes the next
step, remembering nothing in memory that matters. So the controller can be killed at any line
and started again: an attempt row (with a fresh client token) is committed *before*
`provider.launch(token)`, so a relaunch after a crash reuses the token and gets the same
instance; instances whose token no open attempt owns are terminated as leaks.

How an attempt ended decides what comes next, the agent's exit status first and the provider's
state (as SkyPilot's "cluster not UP = preemption") only when the agent left none: exit 0 is
success whatever the machine did after; agent exit 75, a RECLAIMED instance, or an instance
that vanished is a *reclaim* (not the user's fault, its own budget); any other non-zero exit
is the user's *error*.

`spot: auto` with a deadline hands the choice of capacity to the market policy
(`controller/policy.py`) on every pass: launch on spot or on-demand, wait, or move a running
attempt to the other kind. A move marks the attempt `switch` first, then stops it with the
cloud's notice (spot) or a graceful terminate (on-demand), so the job checkpoints; the attempt
ends as a switch, neither a reclaim nor an error, and the job relaunches at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.controller import repo
from spotrun.controller.db import Database
from spotrun.controller.models import ACTIVE, Attempt, Cause, Event, Job, JobStatus
from spotrun.controller.policy import Planner, capacity, describe, label, zone_of
from spotrun.controller.spec import JobSpec
from spotrun.market.policy import IDLE, ON_DEMAND_KIND, SPOT_KIND, Decision
from spotrun.paths import default_store_url, open_private
from spotrun.providers.base import ENDED, Instance, InstanceState, LaunchRefused, LaunchRequest, Provider
from spotrun.redact import redact_url

log = logging.getLogger("spotrun.controller")

RECLAIM_JITTER_S = 0.25  # spread of relaunches after a reclaim
AUTO_ON_DEMAND_AFTER = 3  # `spot: auto`: consecutive spot refusals before trying on-demand


def crash_point(label: str) -> None:
    """Fault injection for tests: die by SIGKILL here when SPOTRUN_TEST_CRASH_AT names `label`
    (after-attempt-row, after-launch, after-terminate)."""
    if os.environ.get("SPOTRUN_TEST_CRASH_AT") == label:
        os.kill(os.getpid(), signal.SIGKILL)


def classify(inst: Instance) -> Cause:
    """Why an ended instance ended, from the controller's side.

    The agent's own exit status comes first: 0 is success even on an instance the cloud
    reclaimed a moment later (the command finished inside the notice window; running it again
    would repeat its side effects). The provider's state decides only when the agent left no
    status of its own: it was killed (a negative status), or the machine went with it.
    """
    rc = inst.returncode
    if rc is not None and rc >= 0:
        if rc == 0:
            return Cause.SUCCESS
        if rc == EXIT_RECLAIMED or inst.state != InstanceState.EXITED:
            return Cause.RECLAIM  # stopped for a notice, or by the provider under it
        return Cause.ERROR
    if inst.state == InstanceState.UNBOOTED:
        return Cause.ERROR
    return Cause.RECLAIM  # RECLAIMED, or lost (GONE / TERMINATED / agent killed while we wanted it)


def resolve_secrets(spec: JobSpec) -> dict[str, str]:
    """The values of the spec's secrets, read now (a rotated file is picked up by the next
    launch); ValueError, which fails the job with this line, when one cannot be read."""
    values = {}
    for name, ref in spec.secrets.items():
        if ref.env is not None:
            if ref.env not in os.environ:
                raise ValueError(f"secret {name}: ${ref.env} is not set in the controller's environment")
            values[name] = os.environ[ref.env]
        else:
            try:
                values[name] = Path(ref.file).expanduser().read_text().rstrip("\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"secret {name}: cannot read {ref.file}: {getattr(exc, 'strerror', None) or exc}") from None
    return values


def backoff_delay(base: float, cap: float, failures: int, rng: random.Random) -> float:
    """Exponential in consecutive failures, capped, with jitter so many jobs don't relaunch in step."""
    return min(cap, base * 2**failures) * rng.uniform(0.5, 1.0)


class Reconciler:
    def __init__(
        self,
        db: Database,
        providers: Mapping[str, Provider],
        *,
        owner: str | None = None,
        interval: float = 1.0,
        lease_s: float = 30.0,
        sweep_every: int = 5,
        exclusive: bool = False,
        rng: random.Random | None = None,
        max_actions: int = 32,
    ):
        """`exclusive`: this controller holds the database's lock (SQLite), so leases left by a
        dead predecessor are taken over at once instead of after they expire. `max_actions`:
        launches (and, apart, terminations) under way at once."""
        self.db = db
        self.providers = providers
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.interval = interval
        self.lease_s = lease_s
        self.sweep_every = sweep_every
        self.exclusive = exclusive
        self.rng = rng or random.Random()
        self.passes = 0
        self.planner = Planner(interval)
        self._stopped: set[int] = set()  # attempts this process has stopped for a switch
        # Provider calls that may be slow (launch, terminate) run as tasks off the pass, one per
        # job at a time: a pass records every other job's outcome without waiting on them.
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._launch_slots = asyncio.Semaphore(max_actions)
        self._terminate_slots = asyncio.Semaphore(max_actions)

    def provider(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            raise LookupError(f"this controller has no provider {name!r} (it has: {', '.join(self.providers)})") from None

    # --- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except Exception:  # one bad pass (DB hiccup, provider bug) must not end the controller
                    log.exception("reconcile pass failed; retrying")
                try:
                    await asyncio.wait_for(stop.wait(), self.interval)
                except TimeoutError:
                    pass
        finally:
            await self.settle()

    async def run_once(self) -> None:
        """One pass: look at every job this controller holds, except those with an action under
        way (their task reports back itself); slow provider calls are started, not awaited."""
        job_ids = self._claim_jobs()
        sem = asyncio.Semaphore(64)

        async def one(job_id: str) -> None:
            async with sem:
                try:
                    await self._step(job_id)
                except Exception:
                    log.exception("job %s: step failed; will retry next pass", job_id)

        await asyncio.gather(*(one(j) for j in job_ids if j not in self._inflight))
        self.planner.keep_only(set(job_ids))
        if self.passes % self.sweep_every == 0:
            await self.sweep_leaks()
        self.passes += 1

    async def settle(self) -> None:
        """Wait for every provider action under way (shutdown, tests)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    async def _act(self, key: str, action: Coroutine[Any, Any, None]) -> None:
        """Run `action` off the pass as `key`'s one task, or inline when already in that task.

        Crash safety stays level-triggered: whatever an action does is recorded before (the
        attempt row, its token) or found again by the next pass, so losing the task loses nothing.
        """
        if self._inflight.get(key) is asyncio.current_task():
            await action
            return
        if key in self._inflight:  # busy with another action: the next pass looks again
            action.close()
            return

        async def run() -> None:
            try:
                await action
            except Exception:
                log.exception("%s: provider action failed; the next pass retries", key)
            finally:
                self._inflight.pop(key, None)

        self._inflight[key] = asyncio.create_task(run())

    def _claim_jobs(self) -> list[str]:
        """Lease every active job that is free (or whose lease expired) to this controller."""
        now = time.time()
        free = or_(Job.lease_owner.is_(None), Job.lease_owner == self.owner, Job.lease_expires < now)
        claim = update(Job).where(Job.status.in_(ACTIVE))
        if not self.exclusive:
            claim = claim.where(free)
        with self.db.session() as s:
            s.execute(
                claim.values(lease_owner=self.owner, lease_expires=now + self.lease_s).execution_options(
                    synchronize_session=False
                )
            )
        with self.db.session() as s:
            return list(
                s.scalars(select(Job.id).where(Job.status.in_(ACTIVE), Job.lease_owner == self.owner))
            )

    # --- one job -------------------------------------------------------------------------

    async def _step(self, job_id: str) -> None:
        """One look at one job."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            attempts = repo.attempts_of(s, job_id)
        if JobStatus(job.status).terminal:  # finished by another controller since we claimed it
            return
        spec = JobSpec.model_validate_json(job.spec)
        provider = self.provider(job.provider)
        current = attempts[-1] if attempts and attempts[-1].ended_at is None else None

        if job.desired == "cancel":
            await self._act(job.id, self._cancel(job, current, provider))
        elif current is not None and current.instance_id is None:
            await self._act(job.id, self._launch(job, spec, current, provider))  # crashed between row and launch
        elif current is not None:
            inst = await provider.query(current.instance_id)
            # A reclaim already announced, or a switch this process started, just plays out.
            steady = inst.state not in ENDED and inst.state != InstanceState.NOTICE
            if not (spec.deadline_aware and steady):
                await self._observe(job, spec, current, inst, provider)
            elif current.cause != Cause.SWITCH.value:
                await self._follow_policy(job, spec, attempts, current, inst, provider)
            elif current.id not in self._stopped:  # marked by a controller that died before stopping it
                await self._act(job.id, self._stop_for_switch(current, inst, spec, provider))
            else:
                await self._observe(job, spec, current, inst, provider)
        elif spec.recovery.deadline is not None and time.time() > job.submitted_at + spec.recovery.deadline:
            self._finish(job.id, JobStatus.FAILED, f"deadline of {spec.recovery.deadline:g}s passed before it completed")
        elif spec.deadline_aware:
            decision = self._decide(job, spec, attempts, None, provider)
            # A refused spot launch backs off spot, not the on-demand the policy may now need.
            refused = bool(attempts) and attempts[-1].cause == Cause.REFUSED.value and decision.kind == ON_DEMAND_KIND
            if decision != IDLE and (time.time() >= job.next_launch_at or refused):
                att = self._new_attempt(job, spec, attempts, provider, decision)
                await self._act(job.id, self._launch(job, spec, att, provider))
        elif time.time() >= job.next_launch_at:
            await self._act(job.id, self._launch(job, spec, self._new_attempt(job, spec, attempts, provider), provider))

    def _relaunch_due(self, job_id: str) -> float | None:
        with self.db.session() as s:
            j = s.get(Job, job_id)
            if j.status != JobStatus.RECOVERING.value or j.desired != "run":
                return None
            wait = j.next_launch_at - time.time()
        return max(0.0, wait) if wait < self.interval else None

    def _decide(self, job: Job, spec: JobSpec, attempts: list[Attempt], current: Attempt | None, provider: Provider) -> Decision:
        """Ask the job's policy; a changed decision goes into the job's timeline."""
        decision, obs = self.planner.decide(job, spec, attempts, current, provider)
        if self.planner.is_news(job.id, decision):
            with self.db.session() as s:
                repo.add_event(s, job.id, "decision", describe(spec, decision, obs), current.number if current else None)
        return decision

    async def _follow_policy(self, job: Job, spec: JobSpec, attempts: list[Attempt], att: Attempt, inst: Instance, provider: Provider) -> None:
        """Keep the running attempt if the policy agrees; else stop it gracefully to relaunch.

        IDLE never stops a running job: only the job knows it is done, the estimate may be short.
        """
        decision = self._decide(job, spec, attempts, att, provider)
        if decision in (IDLE, capacity(spec, att)):
            await self._observe(job, spec, att, inst, provider)
            return
        with self.db.session() as s:  # marked first: a crash after this still ends it as a switch
            s.get(Attempt, att.id).cause = Cause.SWITCH.value
            how = "with the cloud's notice" if inst.spot else "gracefully (SIGTERM)"
            repo.add_event(s, job.id, "switch", f"moving attempt {att.number} to {label(spec, decision)}: stopping {inst.id} {how}", att.number)
        await self._act(job.id, self._stop_for_switch(att, inst, spec, provider))

    async def _stop_for_switch(self, att: Attempt, inst: Instance, spec: JobSpec, provider: Provider) -> None:
        """Stop so the job checkpoints: the cloud's notice on spot, a graceful terminate otherwise."""
        self._stopped.add(att.id)
        try:
            if not inst.spot:
                raise ValueError("on-demand instances get no reclaim notice")
            await provider.interrupt(inst.id, spec.notice.lead_time)
        except (ValueError, NotImplementedError):  # no notice to give: a graceful stop instead
            await self._terminate(provider, inst.id)

    def _new_attempt(self, job: Job, spec: JobSpec, attempts: list[Attempt], provider: Provider,
                     decision: Decision | None = None) -> Attempt:
        res = spec.resources
        if decision is not None:
            spot, zone = decision.kind == SPOT_KIND, zone_of(spec, decision)
            itype = res.instance_types[0]
        else:
            # Each new attempt takes the next (zone, instance type): a refusal or a reclaim moves
            # the job on; `spot: auto` turns to on-demand once a whole round was refused.
            places = res.placements()
            spot = res.spot if res.spot != "auto" else job.refusals < max(AUTO_ON_DEMAND_AFTER, len(places))
            zone, itype = places[len(attempts) % len(places)]
        spot_price, od_price = provider.prices(itype, zone)
        att = Attempt(
            job_id=job.id, number=(attempts[-1].number + 1) if attempts else 1,
            token=f"{job.id}-{os.urandom(8).hex()}", spot=spot, zone=zone,
            instance_type=itype, price=spot_price if spot else od_price,
            on_demand_price=od_price, created_at=time.time(), cost=0.0,
        )
        with self.db.session() as s:
            s.add(att)
            s.get(Job, job.id).status = (
                JobStatus.PROVISIONING.value if job.status == JobStatus.PENDING.value else job.status
            )
            repo.add_event(
                s, job.id, "launching",
                f"launching attempt {att.number}: {'spot' if spot else 'on-demand'}"
                + (f" in {zone}" if zone else ""), att.number,
            )
        crash_point("after-attempt-row")
        return att

    async def _launch(self, job: Job, spec: JobSpec, att: Attempt, provider: Provider) -> None:
        try:
            request = LaunchRequest(
                token=att.token, job_id=job.id, attempt=att.number, run=spec.run, setup=spec.setup,
                workdir=spec.workdir, env=dict(spec.env), spot=att.spot,
                instance_type=att.instance_type, zone=att.zone, max_price=spec.max_price,
                agent_args=spec.agent_args(), owner=self.db.identity,
                secrets={**spec.agent_env(getattr(provider, "store_url", None) or default_store_url()),
                         **resolve_secrets(spec)},
                cloud=spec.cloud_settings(att.zone),
            )
            async with self._launch_slots:
                inst = await provider.launch(request)
        except LaunchRefused as exc:
            self._refused(job, spec, att, f"launch refused: {exc}")
            return
        except ValueError as exc:  # the request itself is wrong (e.g. workdir gone): retrying won't help
            self._refused(job, spec, att, f"launch rejected: {exc}", fatal=True)
            return
        except Exception as exc:  # noqa: BLE001  a provider failure is retried like a refusal
            self._refused(job, spec, att, f"launch failed: {type(exc).__name__}: {exc}")
            return
        crash_point("after-launch")
        with self.db.session() as s:
            a = s.get(Attempt, att.id)
            a.instance_id, a.instance_log = inst.id, inst.log_path
            a.started_at = inst.launched_at or time.time()
            if inst.price_per_hour is not None:
                a.price = inst.price_per_hour
            j = s.get(Job, job.id)
            j.refusals, j.updated_at = 0, time.time()
            repo.add_event(s, job.id, "launched", f"attempt {a.number} on instance {inst.id}", a.number)
            att = a
        await self._observe(job, spec, att, inst, provider)

    def _refused(self, job: Job, spec: JobSpec, att: Attempt, message: str, fatal: bool = False) -> None:
        now = time.time()
        with self.db.session() as s:
            a = s.get(Attempt, att.id)
            a.ended_at, a.cause = now, Cause.REFUSED.value
            j = s.get(Job, job.id)
            if fatal:
                self._set_finished(s, j, JobStatus.FAILED, message)
                return
            # The next untried zone or instance type at once; a whole round refused backs off.
            round_done = (j.refusals + 1) % len(spec.resources.placements()) == 0
            delay = backoff_delay(spec.recovery.backoff.base, spec.recovery.backoff.max, j.refusals, self.rng) if round_done else 0.0
            j.refusals += 1
            j.next_launch_at, j.updated_at = now + delay, now
            launched_before = any(x.instance_id for x in repo.attempts_of(s, job.id))
            j.status = (JobStatus.RECOVERING if launched_before else JobStatus.PENDING).value
            repo.add_event(s, job.id, "refused", f"{message}; retrying in {delay:.1f}s", a.number)

    async def _observe(self, job: Job, spec: JobSpec, att: Attempt, inst: Instance, provider: Provider) -> None:
        self._keep_log(job.id, att, inst)
        if inst.state not in ENDED:
            with self.db.session() as s:
                j = s.get(Job, job.id)
                if inst.state != InstanceState.PENDING:
                    status = JobStatus.RUNNING
                else:  # booting: a recovery stays RECOVERING until the new instance runs
                    status = JobStatus(j.status if j.status == JobStatus.RECOVERING.value else JobStatus.PROVISIONING.value)
                if j.status != status.value and j.desired == "run":
                    j.status, j.updated_at = status.value, time.time()
                    repo.add_event(s, job.id, status.value.lower(), f"attempt {att.number} {inst.state.value}", att.number)
                if inst.state == InstanceState.NOTICE and not self._has_event(s, job.id, att.number, "notice"):
                    repo.add_event(s, job.id, "notice", f"reclaim notice on {inst.id}; the agent is saving work", att.number)
            return
        await self._act(job.id, self._finish_attempt(job, spec, att, inst, provider))

    async def _finish_attempt(self, job: Job, spec: JobSpec, att: Attempt, inst: Instance, provider: Provider) -> None:
        # Free the instance first (idempotent; on a cloud an exited agent may leave a billed VM),
        # then record the end: a crash between the two is repaired by the next pass, which finds
        # the attempt still open.
        await self._terminate(provider, inst.id)
        crash_point("after-terminate")
        ended = self._end_attempt(job, spec, att, inst)
        if ended == Cause.SUCCESS and spec.on_success == "delete" and spec.checkpoint is not None:
            await self._delete_checkpoints(job.id, spec)
        relaunch_in = self._relaunch_due(job.id) if ended is not None else None
        if relaunch_in is not None:  # relaunch now, not a pass later
            await asyncio.sleep(relaunch_in)
            await self._step(job.id)

    async def _terminate(self, provider: Provider, instance_id: str) -> None:
        async with self._terminate_slots:
            await provider.terminate(instance_id)

    async def _delete_checkpoints(self, job_id: str, spec: JobSpec) -> None:
        """Best effort, after the job is recorded SUCCEEDED: a failure here is only reported."""
        from spotrun.controller.checkpoints import delete_checkpoints

        url = spec.store_url(default_store_url())
        shown = redact_url(url)
        try:
            message = f"deleted {await delete_checkpoints(url, job_id)} snapshots from {shown} (on_success: delete)"
        except Exception as exc:  # noqa: BLE001
            message = f"could not delete the checkpoints in {shown}: {str(exc).replace(url, shown)}"
        with self.db.session() as s:
            repo.add_event(s, job_id, "checkpoints", message)

    @staticmethod
    def _has_event(s: Session, job_id: str, attempt: int, kind: str) -> bool:
        return s.scalars(
            select(Event.id).where(Event.job_id == job_id, Event.attempt == attempt, Event.kind == kind)
        ).first() is not None

    def _end_attempt(self, job: Job, spec: JobSpec, att: Attempt, inst: Instance) -> Cause | None:
        """Close the attempt and apply its outcome to the job, in one transaction; exactly once
        (None when it was closed already, e.g. by a controller that took over the lease)."""
        cause = classify(inst)
        now = time.time()
        with self.db.session() as s:
            a = s.get(Attempt, att.id, with_for_update=True)
            j = s.get(Job, job.id, with_for_update=True)
            if a.ended_at is not None or JobStatus(j.status).terminal:
                return None
            if a.cause == Cause.SWITCH.value and cause != Cause.SUCCESS:
                cause = Cause.SWITCH  # we stopped it: however it exited, that is not the cloud's or the user's doing
            self._close(a, j, inst.ended_at or now, cause, inst.returncode)
            rc = "" if inst.returncode is None else f" (exit {inst.returncode})"
            said = f": {inst.detail}" if inst.detail else ""  # the cloud's words: OOMKilled, evicted, ...
            if cause == Cause.SUCCESS:
                repo.add_event(s, job.id, "succeeded", f"attempt {a.number} completed", a.number)
                self._set_finished(s, j, JobStatus.SUCCEEDED, None)
            elif cause == Cause.SWITCH:
                self._stopped.discard(a.id)
                repo.add_event(s, job.id, "switched", f"attempt {a.number} stopped for the policy{rc}; relaunching", a.number)
                j.status, j.next_launch_at = JobStatus.RECOVERING.value, now
            elif cause == Cause.RECLAIM:
                j.reclaims += 1
                how = "reclaimed" if inst.state != InstanceState.GONE else "lost (no heartbeat)"
                repo.add_event(s, job.id, "reclaim", f"attempt {a.number} {how}{rc}{said}", a.number)
                if j.reclaims > spec.recovery.max_reclaims:
                    self._set_finished(s, j, JobStatus.FAILED, f"reclaimed {j.reclaims} times, over recovery.max_reclaims={spec.recovery.max_reclaims}")
                else:
                    # The cloud's doing, not a fault: relaunch at once, with a little jitter to
                    # spread a zone-wide reclaim. A zone out of capacity refuses the launch, and
                    # refusals back off.
                    self._recover(s, j, self.rng.uniform(0, RECLAIM_JITTER_S), "reclaim")
            else:
                j.errors += 1
                tail = repo.tail_lines(repo.kept_log(job.id, a.number))
                failed = "failed" if inst.state != InstanceState.UNBOOTED else "never booted" + (
                    "" if inst.detail else " (no heartbeat within the boot timeout)")
                repo.add_event(s, job.id, "error", f"attempt {a.number} {failed}{rc}{said}", a.number)
                if j.errors > spec.recovery.max_errors:
                    reason = f"the command failed{rc}{said}; recovery.max_errors={spec.recovery.max_errors}"
                    if tail:
                        reason += "; last log lines:\n" + "\n".join(tail)
                    self._set_finished(s, j, JobStatus.FAILED, reason)
                else:
                    delay = backoff_delay(spec.recovery.backoff.base, spec.recovery.backoff.max, j.errors, self.rng)
                    self._recover(s, j, delay, "error")
        return cause

    @staticmethod
    def _close(a: Attempt, j: Job, ended_at: float, cause: Cause, returncode: int | None) -> None:
        """End the attempt and charge its run time (price x time) to the job."""
        a.ended_at, a.cause, a.exit_status = ended_at, cause.value, returncode
        a.cost, on_demand = repo.attempt_cost(a, ended_at)
        j.cost += a.cost
        j.on_demand_cost += on_demand
        j.updated_at = time.time()

    @staticmethod
    def _recover(s: Session, j: Job, delay: float, why: str) -> None:
        j.status, j.next_launch_at = JobStatus.RECOVERING.value, time.time() + delay
        repo.add_event(s, j.id, "recovering", f"relaunching after {why} in {delay:.1f}s")

    @staticmethod
    def _set_finished(s: Session, j: Job, status: JobStatus, reason: str | None) -> None:
        j.status, j.reason, j.finished_at, j.lease_owner = status.value, reason, time.time(), None
        repo.add_event(s, j.id, status.value.lower(), reason or f"job {status.value.lower()}")

    def _finish(self, job_id: str, status: JobStatus, reason: str | None) -> None:
        with self.db.session() as s:
            self._set_finished(s, s.get(Job, job_id), status, reason)

    async def _cancel(self, job: Job, att: Attempt | None, provider: Provider) -> None:
        if att is not None:
            instance_id = att.instance_id or await self._instance_by_token(provider, job.id, att.token)
            inst = None
            if instance_id is not None:
                await self._terminate(provider, instance_id)
                inst = await provider.query(instance_id)
                self._keep_log(job.id, att, inst)
            with self.db.session() as s:
                ended = (inst.ended_at if inst else None) or time.time()
                self._close(s.get(Attempt, att.id), s.get(Job, job.id), ended, Cause.CANCEL, inst.returncode if inst else None)
        self._finish(job.id, JobStatus.CANCELLED, "cancelled by the user")

    @staticmethod
    async def _instance_by_token(provider: Provider, job_id: str, token: str) -> str | None:
        return next((i.id for i in await provider.list_instances(job_id) if i.token == token), None)

    # --- logs and leaks ------------------------------------------------------------------

    @staticmethod
    def _keep_log(job_id: str, att: Attempt, inst: Instance) -> None:
        """Append what is new in the instance's log to the controller's own copy."""
        if not inst.log_path:
            return
        src, dst = Path(inst.log_path), repo.kept_log(job_id, att.number)
        try:
            size = src.stat().st_size
        except FileNotFoundError:
            return
        have = dst.stat().st_size if dst.exists() else 0
        if size < have:
            have = 0
            dst.unlink()
        if size > have:
            with open(src, "rb") as fi, open_private(dst, "ab") as fo:
                fi.seek(have)
                fo.write(fi.read(size - have))

    async def sweep_leaks(self) -> list[str]:
        """Terminate live instances this database launched whose attempt has ended (an instance
        outliving its attempt, e.g. after a crash between the end's record and its terminate).

        Only instances stamped with this database's identity, and whose token it knows, are
        judged: another controller's (another database, or one recreated under the same home)
        are never touched, nor are instances from before identities existed.
        """
        terminated = []
        with self.db.session() as s:
            names = {p for (p,) in s.execute(select(Job.provider).distinct())}
        for name in sorted(names):
            provider = self.provider(name)
            instances = await provider.list_instances()
            mine = [i for i in instances if i.state not in ENDED and i.owner == self.db.identity]
            if not mine:
                continue
            with self.db.session() as s:  # read after listing: a row always precedes its instance
                ended = set(s.scalars(select(Attempt.token).where(
                    Attempt.token.in_([i.token for i in mine]), Attempt.ended_at.is_not(None))))
            for inst in mine:
                if inst.token in ended:
                    log.warning("terminating leaked instance %s: its attempt has ended", inst.id)
                    await self._act(inst.id, self._terminate(provider, inst.id))
                    terminated.append(inst.id)
        return terminated
