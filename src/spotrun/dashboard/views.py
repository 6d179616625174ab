"""What the dashboard shows beyond the CLI's views: a page of jobs, progress across attempts,
and fleet-wide aggregates. Job rows themselves always come from `repo.job_view`, so the API
returns exactly what `spotrun jobs --json` / `status --json` print.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select

from spotrun.check.progress import Progress, attempt_progress, from_output
from spotrun.controller import repo
from spotrun.controller.db import Database
from spotrun.controller.models import Attempt, Cause, Event, Job, JobStatus
from spotrun.controller.spec import JobSpec
from spotrun.paths import default_store_url
from spotrun.sdk.events import EVENTS_ENV

MAX_PAGE = 1000
DECISION_KINDS = ("decision", "switch")
_BUCKETS_S = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)


def page_views(
    db: Database, *, states: list[str] | None = None, q: str | None = None, provider: str | None = None,
    offset: int = 0, limit: int = 100, newest_first: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """One page of `repo.job_view`s matching the filters, and how many match in all.

    Filtering and paging happen in SQL, so a page costs the same with ten or ten thousand jobs.
    """
    query = repo.job_query(states=states, provider=provider)
    if q:
        query = query.where(or_(Job.id.startswith(q, autoescape=True), Job.name.contains(q, autoescape=True)))
    order = (Job.created_at.desc(), Job.id.desc()) if newest_first else (Job.created_at, Job.id)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        jobs = s.scalars(query.order_by(*order).offset(offset).limit(limit)).all()
        return repo.views(s, list(jobs)), total


def state_counts(db: Database) -> dict[str, int]:
    """Jobs per state, every state present (zero when none): the filter chips and /metrics."""
    with db.session() as s:
        found = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return {st.value: int(found.get(st.value, 0)) for st in JobStatus}


def store_url(spec_json: str) -> str | None:
    """Where the job's snapshots go, or None for a job without checkpoints."""
    spec = JobSpec.model_validate_json(spec_json)
    return spec.store_url(default_store_url()) if spec.checkpoint is not None else None


# --- progress across attempts ------------------------------------------------------------


def _log_path(job_id: str, a: Attempt) -> Path:
    """The fuller of the kept copy and the live instance log (the copy lags by one pass)."""
    paths = [p for p in (repo.kept_log(job_id, a.number), Path(a.instance_log or "")) if p.name and p.is_file()]
    return max(paths, key=lambda p: p.stat().st_size, default=repo.kept_log(job_id, a.number))


@functools.lru_cache(maxsize=256)
def _cached_progress(events: str, log: str, attempt: int, _stamp: tuple) -> Progress:
    return attempt_progress(Path(events), Path(log), attempt) if events else from_output(Path(log))


def _stamp(*paths: Path) -> tuple:
    """Sizes and mtimes: a log re-read only when it changed, not on every poll of the page."""
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except (FileNotFoundError, NotADirectoryError):
            out.append(None)
    return tuple(out)


def job_progress(db: Database, ref: str) -> dict[str, Any]:
    """Steps each attempt reported (SDK events, else `step N` lines in its log), and the work each
    reclaim cost: steps the next attempt had to do again, and about how long they took."""
    now = time.time()
    with db.session() as s:
        job = repo.find_job(s, ref)
        attempts = [a for a in repo.attempts_of(s, job.id) if a.instance_id is not None]
        spec = JobSpec.model_validate_json(job.spec)
    events = spec.env.get(EVENTS_ENV, "")
    rows = []
    for a in attempts:
        log = _log_path(job.id, a)
        p = _cached_progress(events, str(log), a.number, _stamp(Path(events), log) if events else _stamp(log))
        run_s = max(0.0, (a.ended_at or now) - (a.started_at or now))
        distinct = len(set(p.steps))
        rows.append({
            "attempt": a.number, "spot": a.spot, "zone": a.zone, "cause": a.cause,
            "started_at": a.started_at, "ended_at": a.ended_at, "first": p.first, "last": p.last,
            "steps": distinct, "saves": p.saves, "restores": p.restores, "source": p.source,
            "seconds_per_step": round(run_s / distinct, 4) if distinct else None,
        })
    lost = []
    for i, cur in enumerate(rows):
        if cur["cause"] not in (Cause.RECLAIM.value, Cause.SWITCH.value):
            continue
        # the next attempt that got as far as a step (one reclaimed while starting reports none)
        nxt = next((r for r in rows[i + 1:] if r["first"] is not None), {"first": None})
        steps = None
        if cur["last"] is not None and nxt["first"] is not None:
            steps = max(0, cur["last"] - nxt["first"] + 1)
        rate = cur["seconds_per_step"]
        lost.append({
            "attempt": cur["attempt"], "cause": cur["cause"], "at_step": cur["last"], "resumed_at": nxt["first"],
            "lost_steps": steps, "lost_seconds": None if steps is None or rate is None else round(steps * rate, 3),
        })
    return {"id": job.id, "source": next((r["source"] for r in rows if r["source"] != "none"), "none"),
            "attempts": rows, "lost": lost}


# --- the fleet ---------------------------------------------------------------------------


def _bucket_s(span: float, buckets: int) -> int:
    want = max(1.0, span / buckets)
    return next((b for b in _BUCKETS_S if b >= want), _BUCKETS_S[-1])


def zone_label(z: str | None) -> str:
    return z or "default"


def fleet_view(db: Database, *, buckets: int = 24, decisions: int = 50) -> dict[str, Any]:
    """Reclaims per zone and instance type over time, spot vs on-demand hours, money paid and
    saved against on-demand, and the latest capacity decisions of `spot: auto` jobs."""
    now = time.time()
    cols = (Attempt.job_id, Attempt.spot, Attempt.zone, Attempt.instance_type, Attempt.started_at,
            Attempt.ended_at, Attempt.cause, Attempt.price, Attempt.on_demand_price, Job.provider)
    with db.session() as s:
        attempts = s.execute(
            select(*cols).join(Job, Job.id == Attempt.job_id).where(Attempt.instance_id.is_not(None))
        ).all()
        chosen = s.execute(
            select(Event, Job.name).join(Job, Job.id == Event.job_id)
            .where(Event.kind.in_(DECISION_KINDS)).order_by(Event.at.desc(), Event.id.desc()).limit(decisions)
        ).all()
        states = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    hours = {"spot": 0.0, "on_demand": 0.0}
    paid = {"spot": 0.0, "on_demand": 0.0}
    od_equiv = 0.0
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for a in attempts:
        kind = "spot" if a.spot else "on_demand"
        run_h = max(0.0, (a.ended_at or now) - (a.started_at or now)) / 3600
        cost, od = repo.attempt_cost(a, now)
        hours[kind] += run_h
        paid[kind] += cost
        od_equiv += od
        g = groups.setdefault((a.provider, zone_label(a.zone)), {
            "provider": a.provider, "zone": zone_label(a.zone), "attempts": 0, "reclaims": 0, "errors": 0,
            "spot_hours": 0.0, "on_demand_hours": 0.0,
        })
        g["attempts"] += 1
        g["reclaims"] += a.cause == Cause.RECLAIM.value
        g["errors"] += a.cause == Cause.ERROR.value
        g[f"{kind}_hours"] += run_h
    for g in groups.values():
        g["reclaims_per_spot_hour"] = round(g["reclaims"] / g["spot_hours"], 3) if g["spot_hours"] else None
        g["spot_hours"], g["on_demand_hours"] = round(g["spot_hours"], 4), round(g["on_demand_hours"], 4)
    reclaims = [a for a in attempts if a.cause == Cause.RECLAIM.value and a.ended_at is not None]
    total_paid = sum(paid.values())
    return {
        "now": now,
        "jobs": {st.value: int(states.get(st.value, 0)) for st in JobStatus},
        "hours": {k: round(v, 4) for k, v in hours.items()},
        "cost": {
            "spot": round(paid["spot"], 6), "on_demand": round(paid["on_demand"], 6), "paid": round(total_paid, 6),
            "on_demand_equivalent": round(od_equiv, 6), "saving": round(od_equiv - total_paid, 6),
            "saving_pct": round(100 * (od_equiv - total_paid) / od_equiv, 1) if od_equiv else 0.0,
        },
        "zones": sorted(groups.values(), key=lambda g: (-g["reclaims"], g["provider"], g["zone"])),
        "reclaims_over_time": {
            "zone": _over_time(reclaims, lambda a: f"{a.provider}/{zone_label(a.zone)}", now, buckets),
            "instance_type": _over_time(reclaims, lambda a: a.instance_type or "default", now, buckets),
        },
        "decisions": [
            {"at": e.at, "job_id": e.job_id, "job_name": name, "attempt": e.attempt, "kind": e.kind, "message": e.message}
            for e, name in chosen
        ],
    }


def _over_time(reclaims: list[Any], key: Any, now: float, buckets: int) -> dict[str, Any]:
    """Reclaim counts per series in equal time buckets (a round size) ending now."""
    if not reclaims:
        return {"start": now, "bucket_s": 60, "buckets": 0, "series": []}
    first = min(a.ended_at for a in reclaims)
    last = max(now, *(a.ended_at for a in reclaims))  # another controller's clock may run ahead
    size = _bucket_s(last - first, buckets)
    start = (first // size) * size
    n = int((last - start) // size) + 1
    series: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    for a in reclaims:
        series[key(a)][int((a.ended_at - start) // size)] += 1
    return {
        "start": start, "bucket_s": size, "buckets": n,
        "series": [{"key": k, "counts": v} for k, v in sorted(series.items(), key=lambda kv: -sum(kv[1]))],
    }
