"""Reads and user requests on the job tables, shared by the CLI, the Python API and the reconciler.

User requests (launch, cancel, resume) only write *desired* state; the reconciler alone turns
it into actions, so a request made while the controller is down is simply acted on later.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, tuple_
from sqlalchemy import Select
from sqlalchemy.orm import Session

from spotrun.controller.db import EVENTS, Database
from spotrun.controller.models import ACTIVE, Attempt, Event, Job, JobStatus
from spotrun.controller.spec import JobSpec
from spotrun.paths import home
from spotrun.redact import redact_url


class JobNotFound(LookupError):
    pass


class JobStateError(RuntimeError):
    """The request does not fit the job's state (cancel a finished job, resume a running one)."""


def logs_dir() -> Path:
    return home() / "logs"


def kept_log(job_id: str, attempt: int) -> Path:
    """The controller's copy of an attempt's log; outlives the instance and its scratch dir."""
    return logs_dir() / job_id / f"attempt-{attempt}.log"


def shown_spec(spec: JobSpec) -> dict[str, Any]:
    """The spec as `status` shows it: secrets are references already; store URLs are redacted."""
    data = spec.model_dump()
    if data.get("checkpoint") and data["checkpoint"].get("store"):
        data["checkpoint"]["store"] = redact_url(data["checkpoint"]["store"])
    return data


def add_event(s: Session, job_id: str, kind: str, message: str, attempt: int | None = None) -> None:
    """Queued, and written with the session's others in one statement when it commits
    (`Database.session`): a pass recording a thousand jobs' news makes one INSERT, not a thousand."""
    s.info.setdefault(EVENTS, []).append({"job_id": job_id, "attempt": attempt, "at": time.time(), "kind": kind, "message": message})


def create_job(db: Database, spec: JobSpec) -> str:
    return create_jobs(db, [spec])[0]


def create_jobs(db: Database, specs: list[JobSpec], sweep: str | None = None) -> list[str]:
    """Every job in one transaction (a sweep of 10 000 is one commit): all of them or none."""
    now = time.time()
    # A sweep's ids are longer: 10 000 ids of 8 hex digits would collide once in ~90 launches.
    ids = [secrets.token_hex(4 if len(specs) == 1 else 6) for _ in specs]
    # created_at a microsecond apart: `spotrun jobs` lists a sweep in its index order.
    jobs = [
        dict(id=job_id, name=spec.display_name(), spec=spec.model_dump_json(), provider=spec.resources.provider,
             desired="run", status=JobStatus.PENDING.value, reclaims=0, errors=0, refusals=0, next_launch_at=0.0,
             cost=0.0, on_demand_cost=0.0, created_at=now + i * 1e-6, submitted_at=now, updated_at=now,
             lease_expires=0.0, sweep=sweep)
        for i, (job_id, spec) in enumerate(zip(ids, specs))
    ]
    events = [dict(job_id=job_id, attempt=None, at=now, kind="submitted",
                   message=f"job {spec.display_name()!r} submitted" + (f" in sweep {sweep}" if sweep else "") + f": {spec.run}")
              for job_id, spec in zip(ids, specs)]
    with db.session() as s:
        s.execute(insert(Job), jobs)  # the job rows first: events reference them
        s.execute(insert(Event), events)
    return ids


def find_job(s: Session, ref: str) -> Job:
    """A job by id or unique id prefix (as git abbreviates commits), else by exact name (newest)."""
    job = s.get(Job, ref)
    if job is not None:
        return job
    matches = s.scalars(select(Job).where(Job.id.like(f"{ref}%"))).all()
    if len(matches) > 1:
        raise JobNotFound(f"job id prefix {ref!r} is ambiguous ({len(matches)} jobs); give more characters")
    if matches:
        return matches[0]
    named = s.scalars(select(Job).where(Job.name == ref).order_by(Job.created_at.desc())).first()
    if named is None:
        raise JobNotFound(f"no job {ref!r}; `spotrun jobs` lists them")
    return named


def request_cancel(db: Database, ref: str) -> str:
    with db.session() as s:
        job = find_job(s, ref)
        if JobStatus(job.status).terminal:
            raise JobStateError(f"job {job.id} already finished ({job.status}); nothing to cancel")
        if job.desired != "cancel":
            job.desired = "cancel"
            job.status = JobStatus.CANCELLING.value
            job.updated_at = time.time()
            add_event(s, job.id, "cancel", "cancel requested")
        return job.id


def request_resume(db: Database, ref: str) -> str:
    """Run a finished job again under the same id, so it restores from its kept checkpoints."""
    with db.session() as s:
        job = find_job(s, ref)
        if not JobStatus(job.status).terminal:
            raise JobStateError(f"job {job.id} is still {job.status}; resume is for finished jobs")
        now = time.time()
        job.desired, job.status, job.reason = "run", JobStatus.PENDING.value, None
        job.reclaims = job.errors = job.refusals = 0
        job.next_launch_at, job.finished_at, job.submitted_at, job.updated_at = 0.0, None, now, now
        add_event(s, job.id, "resume", "resumed from its kept checkpoints; budgets reset")
        return job.id


def attempts_of(s: Session, job_id: str) -> list[Attempt]:
    return list(s.scalars(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)))


def attempt_cost(a: Attempt, now: float) -> tuple[float, float]:
    """(paid, on-demand equivalent) in $ for the attempt's run time so far."""
    if a.started_at is None:
        return 0.0, 0.0
    hours = max(0.0, (a.ended_at or now) - a.started_at) / 3600
    return (a.price or 0.0) * hours, (a.on_demand_price or a.price or 0.0) * hours


def job_view(s: Session, job: Job, *, detail: bool = False, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    """Everything `jobs`/`status` show about a job; running attempts are costed up to now.
    `attempts`: the job's, when read already (`views` reads a page's in one query)."""
    now = time.time()
    attempts = attempts_of(s, job.id) if attempts is None else attempts
    launched = [a for a in attempts if a.instance_id is not None]
    cost = sum(attempt_cost(a, now)[0] for a in launched)
    od = sum(attempt_cost(a, now)[1] for a in launched)
    view: dict[str, Any] = {
        "id": job.id, "name": job.name, "status": job.status, "reason": job.reason,
        "provider": job.provider, "sweep": job.sweep, "attempts": len(launched), "reclaims": job.reclaims,
        "errors": job.errors, "cost": round(cost, 6), "on_demand_cost": round(od, 6),
        "saving": round(od - cost, 6), "saving_pct": round(100 * (od - cost) / od, 1) if od else 0.0,
        "created_at": job.created_at, "finished_at": job.finished_at,
        "wall_s": round((job.finished_at or now) - job.created_at, 3),
    }
    if detail:
        view["spec"] = shown_spec(JobSpec.model_validate_json(job.spec))
        view["attempt_list"] = [
            {
                "number": a.number, "instance_id": a.instance_id, "token": a.token, "spot": a.spot,
                "zone": a.zone, "price": a.price, "started_at": a.started_at, "ended_at": a.ended_at,
                "exit_status": a.exit_status, "cause": a.cause, "cost": round(attempt_cost(a, now)[0], 6),
                "log": str(kept_log(job.id, a.number)),
            }
            for a in attempts
        ]
        events = s.scalars(select(Event).where(Event.job_id == job.id).order_by(Event.at, Event.id))
        view["events"] = [
            {"at": e.at, "attempt": e.attempt, "kind": e.kind, "message": e.message} for e in events
        ]
    return view


def views(s: Session, jobs: list[Job]) -> list[dict[str, Any]]:
    """`job_view` of each job, their attempts read in one query: a page costs two queries, not one per job."""
    by_job: dict[str, list[Attempt]] = {j.id: [] for j in jobs}
    for chunk in range(0, len(jobs), 10_000):  # within every database's limit on bound parameters
        ids = [j.id for j in jobs[chunk:chunk + 10_000]]
        for a in s.scalars(select(Attempt).where(Attempt.job_id.in_(ids)).order_by(Attempt.job_id, Attempt.number)):
            by_job[a.job_id].append(a)
    return [job_view(s, j, attempts=by_job[j.id]) for j in jobs]


def _like(pattern: str) -> str:
    """A shell glob (`train-*`, `lr-?`) as a LIKE pattern, with LIKE's own characters escaped."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def job_query(*, states: list[str] | None = None, name: str | None = None, sweep: str | None = None,
              provider: str | None = None) -> Select:
    """The jobs matching the filters, each served by an index; `name` may be a glob."""
    query = select(Job)
    if states:
        query = query.where(Job.status.in_(states))
    if name:
        query = query.where(Job.name.like(_like(name), escape="\\") if any(c in name for c in "*?") else Job.name == name)
    if sweep:
        query = query.where(Job.sweep == sweep)
    if provider:
        query = query.where(Job.provider == provider)
    return query


def list_views(db: Database, **filters: Any) -> list[dict[str, Any]]:
    """Every job matching `jobs_page`'s filters (all jobs by default), in submission order."""
    return jobs_page(db, **filters)[0]


def jobs_page(db: Database, *, states: list[str] | None = None, name: str | None = None, sweep: str | None = None,
              after: str | None = None, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """A page of jobs in submission order, from just after job `after`, and how many match in all.

    Keyset paging on the (created_at, id) index: page 100 costs what page 1 does, and a job
    submitted meanwhile never shifts a page (the next page starts after the last id seen).
    """
    query = job_query(states=states, name=name, sweep=sweep)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        if after is not None:
            last = s.get(Job, after)
            if last is None:
                raise JobNotFound(f"no job {after!r} to page after; give the id of the last job of the previous page")
            query = query.where(tuple_(Job.created_at, Job.id) > tuple_(last.created_at, last.id))
        query = query.order_by(Job.created_at, Job.id)
        if limit:
            query = query.limit(limit)
        return views(s, list(s.scalars(query))), total


def sweep_view(db: Database, label: str) -> dict[str, Any] | None:
    """A sweep at a glance: its jobs per state, attempts, reclaims and cost so far, in three
    aggregate queries whatever its size; None when no sweep has this label."""
    now = time.time()
    with db.session() as s:
        states = dict(s.execute(select(Job.status, func.count()).where(Job.sweep == label).group_by(Job.status)).all())
        if not states:
            return None
        reclaims, errors = s.execute(select(func.sum(Job.reclaims), func.sum(Job.errors)).where(Job.sweep == label)).one()
        hours = (func.coalesce(Attempt.ended_at, now) - Attempt.started_at) / 3600
        attempts, cost, od = s.execute(
            select(func.count(), func.sum(func.coalesce(Attempt.price, 0.0) * hours),
                   func.sum(func.coalesce(Attempt.on_demand_price, Attempt.price, 0.0) * hours))
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.sweep == label, Attempt.instance_id.is_not(None), Attempt.started_at.is_not(None))
        ).one()
    cost, od = float(cost or 0.0), float(od or 0.0)
    return {
        "sweep": label, "jobs": sum(states.values()),
        "states": {st.value: int(states.get(st.value, 0)) for st in JobStatus if states.get(st.value)},
        "attempts": int(attempts), "reclaims": int(reclaims or 0), "errors": int(errors or 0),
        "cost": round(cost, 6), "on_demand_cost": round(od, 6), "saving": round(od - cost, 6),
        "saving_pct": round(100 * (od - cost) / od, 1) if od else 0.0,
    }


def count_active(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE))) or 0


def get_view(db: Database, ref: str, detail: bool = True) -> dict[str, Any]:
    with db.session() as s:
        return job_view(s, find_job(s, ref), detail=detail)


def tail_lines(path: Path, n: int = 10) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except FileNotFoundError:
        return []
