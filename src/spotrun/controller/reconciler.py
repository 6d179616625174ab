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
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.controller import repo
from spotrun.controller.db import Database
from spotrun.controller.leases import Leases, LeaseLost
from spotrun.controller.models import ACTIVE, Attempt, Cause, Event, Job, JobStatus, shard_of
from spotrun.controller.policy import Planner, capacity, describe, label, zone_of
from spotrun.controller.spec import JobSpec
from spotrun.faults import crash_point
from spotrun.market.policy import IDLE, ON_DEMAND_KIND, SPOT_KIND, Decision
from spotrun.paths import default_store_url, open_private
from spotrun.providers.base import ENDED, Instance, InstanceState, LaunchRefused, LaunchRequest, Provider
from spotrun.redact import redact_url

log = logging.getLogger("spotrun.controller")
T = TypeVar("T")

RECLAIM_JITTER_S = 0.25  # spread of relaunches after a reclaim
AUTO_ON_DEMAND_AFTER = 3  # `spot: auto`: consecutive spot refusals before trying on-demand
IN_CHUNK = 1000  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits
# A pass's view of jobs and attempts: what deciding needs (specs are parsed once and cached).
JOB_COLUMNS = [Job.id, Job.provider, Job.desired, Job.status, Job.refusals, Job.next_launch_at, Job.submitted_at,
               Job.lease_token]
ATTEMPT_COLUMNS = [c for c in Attempt.__table__.c if c.name not in ("instance_log", "exit_status", "cost")]


class NewAttempt(NamedTuple):
    job: Job
    spec: JobSpec
    att: Attempt


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
        """`exclusive`: this controller holds the database's lock (SQLite), so it owns every job
        and takes over a dead predecessor's at once instead of after its lease. `max_actions`:
        launches (and, apart, terminations) under way at once; a pass starts new attempts
        until four times as many actions are under way, so a burst of submissions spreads over passes."""
        self.db = db
        self.providers = providers
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.interval = interval
        self.sweep_every = sweep_every
        self.rng = rng or random.Random()
        self.passes = 0
        self.planner = Planner(interval)
        self.leases = Leases(db, self.owner, lease_s, exclusive)
        self.max_actions = max_actions
        self.pass_s = 0.0  # the last pass's duration
        self.lag_s = 0.0  # the last pass's oldest instance end, seen but not yet recorded
        self._specs: dict[str, JobSpec] = {}  # parsed once per claim: a job's spec never changes
        self._aware: set[str] = set()  # jobs whose capacity the market policy picks (spec.deadline_aware)
        self._notes: list[tuple[Job, Attempt, Instance]] = []  # live instances' news, written once per pass
        self._stopped: set[int] = set()  # attempts this process has stopped for a switch
        self._noticed: set[int] = set()  # attempts whose notice is in their timeline
        # Provider calls that may be slow (launch, terminate) run as tasks off the pass, one per
        # job at a time: a pass records every other job's outcome without waiting on them.
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._launching: set[str] = set()  # jobs whose task under way is a launch, which a cancel may cut short
        self._settled: set[str] = set()  # jobs whose task ended since the pass's snapshot
        self._writes: list[tuple[Job, int, Callable[[Session, Any], Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
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
            try:
                self.leases.leave()  # the others take this one's jobs now, not after its lease
            except Exception:  # noqa: BLE001  the database may be what failed: the lease runs out
                log.exception("could not hand this controller's jobs back; they move when its lease ends")

    async def run_once(self) -> None:
        """One pass over every job this controller holds, in a fixed number of queries and one
        listing per provider whatever the number of jobs; slow provider calls are started, not
        awaited, and jobs with an action under way are left to it (their task reports back)."""
        started = time.monotonic()
        self.leases.heartbeat({"passes": self.passes, "jobs": len(self._specs), "pass_s": self.pass_s, "lag_s": self.lag_s})
        for claimed in self.leases.claim(set(self._inflight)):
            self._keep_spec(claimed.id, claimed.spec)
        jobs, current = self._snapshot()
        listed = {name: await self._listing(name) for name in sorted({j.provider for j in jobs})}
        now = time.time()
        launches = max(0, 4 * self.max_actions - len(self._inflight))  # new attempts this pass may start
        wants_history = []
        for job in jobs:
            aware = job.id in self._aware
            may_launch = current.get(job.id) is None and job.desired == "run" and (aware or now >= job.next_launch_at)
            if aware or (may_launch and len(wants_history) < launches):
                wants_history.append(job.id)
        histories = self._histories(wants_history)
        self._pass_lag = 0.0
        starts: list[NewAttempt] = []
        for job in jobs:
            if job.id in self._inflight:
                if job.desired == "cancel" and job.id in self._launching:
                    # A launch may wait minutes (a pod not yet scheduled, a full launch queue); the
                    # cancel should not. What it made is found by its token in the next pass.
                    self._inflight[job.id].cancel()
                continue
            if job.id in self._settled:
                continue
            try:
                await self._step(job, self._specs[job.id], current.get(job.id), histories.get(job.id),
                                 listed.get(job.provider, {}), starts)
            except LeaseLost as exc:
                log.info("%s", exc)
            except Exception:
                log.exception("job %s: step failed; will retry next pass", job.id)
        await self._start(starts)
        self._write_notes()
        held = {j.id for j in jobs}
        self.planner.keep_only(held)
        for gone in set(self._specs) - held - set(self._inflight):
            del self._specs[gone]
            self._aware.discard(gone)
        if self.passes % self.sweep_every == 0:
            await self.sweep_leaks(listed, {a.token for a in current.values()})
            self.leases.sweep_dead()
        self.passes += 1
        self.lag_s, self.pass_s = self._pass_lag, time.monotonic() - started

    def _snapshot(self) -> tuple[list[Job], dict[str, Attempt]]:
        """This controller's active jobs (specs come from the cache) and their open attempts:
        two queries, read together, the pass's view of the database. Plain rows, read-only and
        with the ORM objects' attribute names: building 10 000 ORM objects would cost more
        than the rest of the pass."""
        mine = (Job.lease_owner == self.owner, Job.status.in_(ACTIVE))
        with self.db.session() as s:
            jobs = list(s.execute(select(*JOB_COLUMNS).where(*mine)))
            open_ = s.execute(select(*ATTEMPT_COLUMNS).join(Job, Job.id == Attempt.job_id)
                              .where(*mine, Attempt.ended_at.is_(None)).order_by(Attempt.number))
            current = {a.job_id: a for a in open_}
            missing = [j.id for j in jobs if j.id not in self._specs]  # held before this process, by its owner name
            for chunk in range(0, len(missing), IN_CHUNK):
                for job_id, raw in s.execute(select(Job.id, Job.spec).where(Job.id.in_(missing[chunk:chunk + IN_CHUNK]))):
                    self._keep_spec(job_id, raw)
        self._settled.clear()
        return jobs, current

    def _keep_spec(self, job_id: str, raw: str) -> None:
        spec = self._specs[job_id] = JobSpec.model_validate_json(raw)
        if spec.deadline_aware:
            self._aware.add(job_id)

    def _histories(self, job_ids: list[str]) -> dict[str, list[Attempt]]:
        """Every attempt of the jobs about to launch or follow a policy, in number order."""
        out: dict[str, list[Attempt]] = {j: [] for j in job_ids}
        with self.db.session() as s:
            for chunk in range(0, len(job_ids), IN_CHUNK):
                for a in s.execute(select(*ATTEMPT_COLUMNS).where(Attempt.job_id.in_(job_ids[chunk:chunk + IN_CHUNK]))
                                   .order_by(Attempt.job_id, Attempt.number)):
                    out[a.job_id].append(a)
        return out

    async def _listing(self, name: str) -> dict[str, Instance]:
        """One call for the provider's whole fleet, instead of one query per instance."""
        return {i.id: i for i in await self.provider(name).list_instances()}

    async def settle(self) -> None:
        """Wait for every provider action under way (shutdown, tests)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    async def _act(self, key: str, action: Coroutine[Any, Any, None], launch: bool = False) -> None:
        """Run `action` off the pass as `key`'s one task, or inline when already in that task.

        Crash safety stays level-triggered: whatever an action does is recorded before (the
        attempt row, its token) or found again by the next pass, so losing the task loses nothing;
        that is also why a `launch` may be cancelled half-way for the user's cancel.
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
            except LeaseLost as exc:  # another controller took the job over: it carries on
                log.info("%s", exc)
            except asyncio.CancelledError:
                if not launch:
                    raise
                log.info("%s: launch given up for the job's cancel", key)
            except Exception:
                log.exception("%s: provider action failed; the next pass retries", key)
            finally:
                self._inflight.pop(key, None)
                self._launching.discard(key)
                self._settled.add(key)

        self._inflight[key] = asyncio.create_task(run())
        if launch:
            self._launching.add(key)

    async def _write(self, job: Job, attempt_id: int, write: Callable[[Session, Any], T]) -> T:
        """`write(session, job_row)` for one of the job's attempts, committed with whatever other
        actions write at the same moment: group commit, so a burst of launches or reclaims is a
        few transactions, not thousands. Fenced like `_txn`; returns once committed."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writes.append((job, attempt_id, write, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches())
        return await done

    async def _write_batches(self) -> None:
        while self._writes:
            await asyncio.sleep(0)  # writers of this moment join the batch
            batch, self._writes = self._writes, []
            results: list[Any] = []
            try:
                with self.db.session() as s:
                    held = self.leases.fence(s, {job.id: job.lease_token for job, _, _, _ in batch})
                    ids, attempts = [a for _, a, _, _ in batch], []  # held: the session keeps rows weakly
                    for at in range(0, len(ids), IN_CHUNK):  # into the session: each write's s.get is free
                        attempts += s.scalars(select(Attempt).where(Attempt.id.in_(ids[at:at + IN_CHUNK])).with_for_update()).all()
                    for job, _, write, _ in batch:
                        results.append(write(s, held[job.id]) if job.id in held else
                                       LeaseLost(f"job {job.id}: this controller ({self.owner}) no longer holds its lease"))
            except Exception as exc:  # noqa: BLE001  every writer of the batch hears it, and retries
                for *_, done in batch:
                    done.set_exception(exc)
                continue
            for (*_, done), result in zip(batch, results):
                if isinstance(result, LeaseLost):
                    done.set_exception(result)
                else:
                    done.set_result(result)

    @contextlib.contextmanager
    def _txn(self, job: Job) -> Iterator[Session]:
        """A transaction that writes for `job`: refused (LeaseLost) unless this controller still
        holds the job with the fencing token it read it with."""
        with self.db.session() as s:
            held = self.leases.fence(s, {job.id: job.lease_token})  # kept: the writer's s.get(Job) is free
            if not held:
                raise LeaseLost(f"job {job.id}: this controller ({self.owner}) no longer holds its lease")
            yield s

    # --- one job -------------------------------------------------------------------------

    async def _step(self, job: Job, spec: JobSpec, current: Attempt | None, attempts: list[Attempt] | None,
                    listed: Mapping[str, Instance], starts: list[NewAttempt]) -> None:
        """One look at one job. `attempts` (its history) is None when this pass has no launch
        to spare for it; `listed` is its provider's fleet, listed once for the pass; a new
        attempt goes into `starts`, for the caller to record with the others in one go."""
        provider = self.provider(job.provider)
        if job.desired == "cancel":
            await self._act(job.id, self._cancel(job, current, provider))
        elif current is not None and current.instance_id is None:
            # Crashed between the attempt's row and its launch.
            await self._act(job.id, self._launch(job, spec, current, provider), launch=True)
        elif current is not None:
            # Missing from the listing: gone, or a listing older than its launch; ask for it alone.
            inst = listed.get(current.instance_id) or await provider.query(current.instance_id)
            # A reclaim already announced, or a switch this process started, just plays out.
            steady = inst.state not in ENDED and inst.state != InstanceState.NOTICE
            if not (job.id in self._aware and steady):
                await self._observe(job, spec, current, inst, provider)
            elif current.cause != Cause.SWITCH.value:
                await self._follow_policy(job, spec, attempts or [current], current, inst, provider)
            elif current.id not in self._stopped:  # marked by a controller that died before stopping it
                await self._act(job.id, self._stop_for_switch(job, current, inst, spec, provider))
            else:
                await self._observe(job, spec, current, inst, provider)
        elif spec.recovery.deadline is not None and time.time() > job.submitted_at + spec.recovery.deadline:
            self._finish(job, JobStatus.FAILED, f"deadline of {spec.recovery.deadline:g}s passed before it completed")
        elif attempts is None:
            return  # over this pass's launch budget: a later pass launches it
        elif job.id in self._aware:
            decision = self._decide(job, spec, attempts, None, provider)
            # A refused spot launch backs off spot, not the on-demand the policy may now need.
            refused = bool(attempts) and attempts[-1].cause == Cause.REFUSED.value and decision.kind == ON_DEMAND_KIND
            if decision != IDLE and (time.time() >= job.next_launch_at or refused):
                starts.append(NewAttempt(job, spec, self._attempt_row(job, spec, attempts, provider, decision)))
        elif time.time() >= job.next_launch_at:
            starts.append(NewAttempt(job, spec, self._attempt_row(job, spec, attempts, provider)))

    async def _step_now(self, job_id: str) -> None:
        """Look at one job again at once (after its attempt ended), outside the pass."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            attempts = repo.attempts_of(s, job_id)
        if job is None or job.lease_owner != self.owner or JobStatus(job.status).terminal or job.id not in self._specs:
            return
        current = attempts[-1] if attempts and attempts[-1].ended_at is None else None
        starts: list[NewAttempt] = []
        await self._step(job, self._specs[job_id], current, attempts, {}, starts)
        await self._start(starts)

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
            with self._txn(job) as s:
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
        with self._txn(job) as s:  # marked first: a crash after this still ends it as a switch
            s.get(Attempt, att.id).cause = Cause.SWITCH.value
            how = "with the cloud's notice" if inst.spot else "gracefully (SIGTERM)"
            repo.add_event(s, job.id, "switch", f"moving attempt {att.number} to {label(spec, decision)}: stopping {inst.id} {how}", att.number)
        await self._act(job.id, self._stop_for_switch(job, att, inst, spec, provider))

    async def _stop_for_switch(self, job: Job, att: Attempt, inst: Instance, spec: JobSpec, provider: Provider) -> None:
        """Stop so the job checkpoints: the cloud's notice on spot, a graceful terminate otherwise.
        A stop that is over already (a terminate that waited, a notice with no lead) relaunches
        now rather than a pass later, as the policy that chose the switch assumed."""
        self._stopped.add(att.id)
        try:
            if not inst.spot:
                raise ValueError("on-demand instances get no reclaim notice")
            await provider.interrupt(inst.id, spec.notice.lead_time)
        except (ValueError, NotImplementedError):  # no notice to give: a graceful stop instead
            await self._terminate(provider, inst.id)
        stopped = await provider.query(inst.id)
        if stopped.state in ENDED:
            await self._finish_attempt(job, spec, att, stopped, provider)

    def _attempt_row(self, job: Job, spec: JobSpec, attempts: list[Attempt], provider: Provider,
                     decision: Decision | None = None) -> Attempt:
        """The job's next attempt, not yet recorded: where and on what capacity it launches."""
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
        return Attempt(
            job_id=job.id, number=(attempts[-1].number + 1) if attempts else 1,
            token=f"{job.id}-{os.urandom(8).hex()}", spot=spot, zone=zone,
            instance_type=itype, price=spot_price if spot else od_price,
            on_demand_price=od_price, created_at=time.time(), cost=0.0,
        )

    async def _start(self, starts: list[NewAttempt]) -> None:
        """Record new attempts, all in one transaction (a burst of launches is one commit, not
        thousands), each with its token before its launch; then launch them off the pass."""
        if not starts:
            return
        with self.db.session() as s:
            held = self.leases.fence(s, {n.job.id: n.job.lease_token for n in starts})
            for n in starts:
                if n.job.id not in held:
                    log.info("job %s: this controller no longer holds its lease; its new owner launches it", n.job.id)
                    continue
                s.add(n.att)
                j = held[n.job.id]
                if j.status == JobStatus.PENDING.value:
                    j.status = JobStatus.PROVISIONING.value
                repo.add_event(
                    s, j.id, "launching",
                    f"launching attempt {n.att.number}: {'spot' if n.att.spot else 'on-demand'}"
                    + (f" in {n.att.zone}" if n.att.zone else ""), n.att.number,
                )
        crash_point("after-attempt-row")
        for n in starts:
            if n.job.id in held:
                launch = self._launch(n.job, n.spec, n.att, self.provider(n.job.provider))
                await self._act(n.job.id, launch, launch=True)

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
            await self._refused(job, spec, att, f"launch refused: {exc}")
            return
        except ValueError as exc:  # the request itself is wrong (e.g. workdir gone): retrying won't help
            await self._refused(job, spec, att, f"launch rejected: {exc}", fatal=True)
            return
        except Exception as exc:  # noqa: BLE001  a provider failure is retried like a refusal
            await self._refused(job, spec, att, f"launch failed: {type(exc).__name__}: {exc}")
            return
        crash_point("after-launch")

        def write(s: Session, j: Job) -> tuple[Attempt, str]:
            a = s.get(Attempt, att.id)
            a.instance_id, a.instance_log = inst.id, inst.log_path
            a.started_at = inst.launched_at or time.time()
            if inst.price_per_hour is not None:
                a.price = inst.price_per_hour
            j.refusals, j.updated_at = 0, time.time()
            repo.add_event(s, job.id, "launched", f"attempt {a.number} on instance {inst.id}", a.number)
            if inst.state not in ENDED:
                self._note_state(s, j, a, inst, set())  # a new attempt: no notice recorded yet
            return a, j.status

        recorded, status = await self._write(job, att.id, write)
        await self._observe(job, spec, recorded, inst, provider, status)

    async def _refused(self, job: Job, spec: JobSpec, att: Attempt, message: str, fatal: bool = False) -> None:
        now = time.time()

        def write(s: Session, j: Job) -> None:
            a = s.get(Attempt, att.id)
            a.ended_at, a.cause = now, Cause.REFUSED.value
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

        await self._write(job, att.id, write)

    async def _observe(self, job: Job, spec: JobSpec, att: Attempt, inst: Instance, provider: Provider,
                       status: str | None = None) -> None:
        """Act on what the instance says; `status`: the job's, if newer than the pass's view."""
        self._keep_log(job.id, att, inst)
        if inst.state in ENDED:
            if inst.ended_at is not None:
                self._pass_lag = max(self._pass_lag, time.time() - inst.ended_at)
            await self._act(job.id, self._finish_attempt(job, spec, att, inst, provider))
            return
        # Written only when the pass's view of the job says something changed: a steady job
        # costs no query. The transaction reads the row again, so a cancel since then wins.
        status = status or job.status
        noticed = inst.state != InstanceState.NOTICE or att.id in self._noticed
        if self._status_seen(status, inst) != status or not noticed:
            self._notes.append((job, att, inst))  # written with the pass's others, in one transaction

    def _write_notes(self) -> None:
        """Record the pass's news of live instances (a job now running, a notice) in one
        transaction; news of an attempt that has ended since is dropped."""
        notes, self._notes = self._notes, []
        if not notes:
            return
        with self.db.session() as s:
            held = self.leases.fence(s, {job.id: job.lease_token for job, _, _ in notes})
            ids = [att.id for _, att, _ in notes]
            live: set[int] = set()
            recorded: set[tuple[str, int]] = set()
            for at in range(0, len(ids), IN_CHUNK):
                live.update(s.scalars(select(Attempt.id).where(Attempt.id.in_(ids[at:at + IN_CHUNK]), Attempt.ended_at.is_(None))))
            noticing = [job.id for job, _, inst in notes if inst.state == InstanceState.NOTICE]
            for at in range(0, len(noticing), IN_CHUNK):
                recorded.update((j, n) for j, n in s.execute(select(Event.job_id, Event.attempt).where(
                    Event.kind == "notice", Event.job_id.in_(noticing[at:at + IN_CHUNK]))))
            for job, att, inst in notes:
                if job.id in held and att.id in live:
                    self._note_state(s, held[job.id], att, inst, recorded)

    def _note_state(self, s: Session, j: Job, att: Attempt, inst: Instance, recorded: set[tuple[str, int]]) -> None:
        """Record what a live instance says of its job: the status it implies, and its notice
        unless `recorded` (job, attempt) already has one."""
        status = self._status_seen(j.status, inst)
        if j.status != status and j.desired == "run":
            j.status, j.updated_at = status, time.time()
            repo.add_event(s, j.id, status.lower(), f"attempt {att.number} {inst.state.value}", att.number)
        if inst.state == InstanceState.NOTICE and att.id not in self._noticed:
            if (j.id, att.number) not in recorded:
                repo.add_event(s, j.id, "notice", f"reclaim notice on {inst.id}; the agent is saving work", att.number)
            self._noticed.add(att.id)

    @staticmethod
    def _status_seen(status: str, inst: Instance) -> str:
        """The job's status given its live instance: booting keeps a recovery RECOVERING."""
        if inst.state != InstanceState.PENDING:
            return JobStatus.RUNNING.value
        return status if status == JobStatus.RECOVERING.value else JobStatus.PROVISIONING.value

    async def _finish_attempt(self, job: Job, spec: JobSpec, att: Attempt, inst: Instance, provider: Provider) -> None:
        # Free the instance first (idempotent; on a cloud an exited agent may leave a billed VM),
        # then record the end: a crash between the two is repaired by the next pass, which finds
        # the attempt still open.
        await self._terminate(provider, inst.id)
        crash_point("after-terminate")
        ended = await self._end_attempt(job, spec, att, inst)
        if ended == Cause.SUCCESS and spec.on_success == "delete" and spec.checkpoint is not None:
            await self._delete_checkpoints(job.id, spec)
        relaunch_in = self._relaunch_due(job.id) if ended is not None else None
        if relaunch_in is not None:  # relaunch now, not a pass later
            await asyncio.sleep(relaunch_in)
            await self._step_now(job.id)

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

    async def _end_attempt(self, job: Job, spec: JobSpec, att: Attempt, inst: Instance) -> Cause | None:
        """Close the attempt and apply its outcome to the job, in one transaction; exactly once
        (None when it was closed already, e.g. by a controller that took over the lease)."""
        cause = classify(inst)
        now = time.time()

        def write(s: Session, j: Job) -> Cause | None:
            nonlocal cause
            a = s.get(Attempt, att.id)
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

        return await self._write(job, att.id, write)

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

    def _finish(self, job: Job, status: JobStatus, reason: str | None) -> None:
        with self._txn(job) as s:
            self._set_finished(s, s.get(Job, job.id), status, reason)

    async def _cancel(self, job: Job, att: Attempt | None, provider: Provider) -> None:
        if att is not None:
            instance_id = att.instance_id or await self._instance_by_token(provider, job.id, att.token)
            inst = None
            if instance_id is not None:
                await self._terminate(provider, instance_id)
                inst = await provider.query(instance_id)
                self._keep_log(job.id, att, inst)
            with self._txn(job) as s:
                ended = (inst.ended_at if inst else None) or time.time()
                self._close(s.get(Attempt, att.id), s.get(Job, job.id), ended, Cause.CANCEL, inst.returncode if inst else None)
        self._finish(job, JobStatus.CANCELLED, "cancelled by the user")

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

    async def sweep_leaks(self, listed: Mapping[str, Mapping[str, Instance]] | None = None,
                          running: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Terminate live instances this database launched whose attempt has ended (an instance
        outliving its attempt, e.g. after a crash between the end's record and its terminate).

        Only instances stamped with this database's identity, and whose token it knows, are
        judged: another controller's (another database, or one recreated under the same home)
        are never touched, nor are instances from before identities existed. Controllers sharing
        the database each sweep the instances of their own shards. `listed`: the pass's listings;
        `running`: tokens of attempts the pass saw open, whose instances are not asked about.
        """
        terminated = []
        listed = listed or {}
        shards = None if self.leases.exclusive else set(self.leases.my_shards())
        with self.db.session() as s:
            names = {p for (p,) in s.execute(select(Job.provider).distinct())}
        for name in sorted(names):
            provider = self.provider(name)
            instances = (listed[name] if name in listed else await self._listing(name)).values()
            mine = [i for i in instances if i.state not in ENDED and i.owner == self.db.identity
                    and i.token not in running and (shards is None or shard_of(i.job_id) in shards)]
            if not mine:
                continue
            ended: set[str] = set()
            with self.db.session() as s:  # read after listing: a row always precedes its instance
                for chunk in range(0, len(mine), IN_CHUNK):
                    ended.update(s.scalars(select(Attempt.token).where(
                        Attempt.token.in_([i.token for i in mine[chunk:chunk + IN_CHUNK]]), Attempt.ended_at.is_not(None))))
            for inst in mine:
                if inst.token in ended:
                    log.warning("terminating leaked instance %s: its attempt has ended", inst.id)
                    await self._act(inst.id, self._terminate(provider, inst.id))
                    terminated.append(inst.id)
        return terminated
