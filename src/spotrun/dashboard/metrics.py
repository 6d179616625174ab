"""`/metrics` in Prometheus' text format, through `prometheus_client`.

Job, attempt, reclaim, error, latency and cost series are read from the database at each
scrape (a custom collector), so they agree with `spotrun jobs` and survive dashboard restarts.
Snapshot series come from the checkpoint stores' manifests: each published manifest is
observed once (they never change), and stores are re-listed at most every SNAPSHOT_SCAN_S.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from sqlalchemy import select

from spotrun.controller import repo
from spotrun.controller.db import Database
from spotrun.controller.models import Attempt, Cause, Event, Job
from spotrun.dashboard.views import state_counts, store_url, zone_label

log = logging.getLogger("spotrun.dashboard")

RELAUNCH_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
SNAPSHOT_SCAN_S = 15.0


class JobsCollector:
    """Everything derived from the controller's tables, recomputed at each scrape."""

    def __init__(self, db: Database):
        self.db = db

    def collect(self) -> Iterator[Metric]:
        from spotrun.cli.jobs import controller_view

        now = time.time()
        jobs = GaugeMetricFamily("spotrun_jobs", "Jobs in each state.", labels=["state"])
        for state, n in state_counts(self.db).items():
            jobs.add_metric([state], n)
        yield jobs
        up = GaugeMetricFamily("spotrun_controller_up", "1 when the controller daemon of this database runs.")
        up.add_metric([], 1.0 if controller_view(self.db)["running"] else 0.0)
        yield up

        with self.db.session() as s:
            attempts = s.execute(
                select(Attempt.job_id, Attempt.number, Attempt.spot, Attempt.zone, Attempt.cause, Attempt.started_at,
                       Attempt.ended_at, Attempt.price, Attempt.on_demand_price, Job.provider)
                .join(Job, Job.id == Attempt.job_id).where(Attempt.instance_id.is_not(None))
            ).all()
            events = s.execute(
                select(Event.job_id, Event.attempt, Event.kind, Event.at)
                .where(Event.kind.in_(("notice", "reclaim", "launched"))).order_by(Event.at, Event.id)
            ).all()
        launched: dict[tuple, float] = defaultdict(float)
        ended: dict[tuple[str, str, str], float] = defaultdict(float)
        cost: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        provider_of = {}
        for a in attempts:
            capacity = "spot" if a.spot else "on_demand"
            launched[(a.provider, zone_label(a.zone), capacity)] += 1
            if a.cause in (Cause.RECLAIM.value, Cause.ERROR.value):
                ended[(a.cause, a.provider, zone_label(a.zone))] += 1
            paid, od = repo.attempt_cost(a, now)
            cost[(a.provider, capacity)][0] += paid
            cost[(a.provider, capacity)][1] += od
            provider_of[a.job_id] = a.provider
        yield _counter("spotrun_attempts", "Attempts launched (instances started).", ["provider", "zone", "capacity"], launched)
        for cause, what in ((Cause.RECLAIM.value, "Attempts the cloud reclaimed."), (Cause.ERROR.value, "Attempts the job's command failed.")):
            series = {k[1:]: v for k, v in ended.items() if k[0] == cause}
            yield _counter(f"spotrun_{cause}s", what, ["provider", "zone"], series)
        yield _counter("spotrun_cost_dollars", "Money paid for instance time, $ (running attempts up to now).",
                       ["provider", "capacity"], {k: v[0] for k, v in cost.items()})
        yield _counter("spotrun_on_demand_cost_dollars", "What the same instance time costs on-demand, $.",
                       ["provider", "capacity"], {k: v[1] for k, v in cost.items()})
        saving = GaugeMetricFamily("spotrun_saving_dollars", "Saved against on-demand, $.", labels=["provider"])
        by_provider: dict[str, float] = defaultdict(float)
        for (provider, _), (paid, od) in cost.items():
            by_provider[provider] += od - paid
        for provider, v in sorted(by_provider.items()):
            saving.add_metric([provider], v)
        yield saving
        yield _relaunch_histogram(events, provider_of)


def relaunch_latencies(events: list[Any]) -> list[tuple[str, float]]:
    """(job id, seconds) from each reclaim's notice (or, when none was seen, the reclaim itself)
    to the launch of the job's next attempt."""
    notice: dict[tuple[str, int], float] = {}
    waiting: dict[str, float] = {}
    out = []
    for job_id, attempt, kind, at in events:
        if kind == "notice":
            notice.setdefault((job_id, attempt), at)
        elif kind == "reclaim":
            waiting[job_id] = notice.get((job_id, attempt), at)
        elif kind == "launched" and job_id in waiting:
            out.append((job_id, at - waiting.pop(job_id)))
    return out


def _relaunch_histogram(events: list[Any], provider_of: dict[str, str]) -> HistogramMetricFamily:
    per: dict[str, list[float]] = defaultdict(list)
    for job_id, seconds in relaunch_latencies(events):
        per[provider_of.get(job_id, "unknown")].append(seconds)
    h = HistogramMetricFamily(
        "spotrun_notice_to_relaunch_seconds", "From a reclaim notice to the next attempt's launch.", labels=["provider"]
    )
    for provider, values in sorted(per.items()):
        buckets = [(floatToGoString(b), sum(v <= b for v in values)) for b in RELAUNCH_BUCKETS]
        h.add_metric([provider], [*buckets, ("+Inf", len(values))], sum(values))
    return h


def _counter(name: str, doc: str, labels: list[str], values: dict[tuple, float]) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=labels)
    for key, v in sorted(values.items()):
        c.add_metric(list(key), v)
    return c


class SnapshotStats:
    """Snapshot sizes and durations from the stores' manifests, each manifest counted once."""

    def __init__(self, db: Database, registry: CollectorRegistry):
        self.db = db
        self.seen: set[str] = set()
        self.scanned_at = 0.0
        self.count = Counter("spotrun_snapshots", "Snapshots published to checkpoint stores.", registry=registry)
        self.uploaded = Counter("spotrun_snapshot_uploaded_bytes", "Bytes snapshots uploaded (new chunks only).", registry=registry)
        self.size = Histogram(
            "spotrun_snapshot_size_bytes", "Checkpoint bytes a snapshot covers.", registry=registry,
            buckets=tuple(2.0**p for p in range(10, 41, 3)),
        )
        self.duration = Histogram(
            "spotrun_snapshot_duration_seconds", "From scan start to the published manifest.", registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )

    async def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.scanned_at < SNAPSHOT_SCAN_S:
            return
        self.scanned_at = time.monotonic()
        from spotrun.store import Store, StoreError

        with self.db.session() as s:
            specs = s.execute(select(Job.id, Job.spec)).all()
        by_store: dict[str, list[str]] = defaultdict(list)
        for job_id, spec in specs:
            url = store_url(spec)
            if url is not None:
                by_store[url].append(job_id)
        for url, job_ids in by_store.items():
            try:
                store = Store.open(url)
                for job_id in job_ids:
                    await self._scan(store, job_id)
            except StoreError as exc:  # a store not written yet, or unreachable: next scan
                log.debug("snapshot scan of %s: %s", url, exc)

    async def _scan(self, store: Any, job_id: str) -> None:
        from spotrun.store import StoreError

        for ref in await store.snapshots(job_id):
            if ref.key in self.seen:
                continue
            try:
                self._observe(await store.manifest(ref))
            except StoreError as exc:  # pruned since the listing, or unreadable: counted as nothing
                log.debug("snapshot %s: %s", ref.key, exc)
            self.seen.add(ref.key)

    def _observe(self, m: Any) -> None:
        self.count.inc()
        self.size.observe(m.total_size)
        if isinstance(m.extra.get("uploaded_bytes"), int):
            self.uploaded.inc(m.extra["uploaded_bytes"])
        if isinstance(m.extra.get("duration_s"), (int, float)):
            self.duration.observe(m.extra["duration_s"])


def make_registry(db: Database) -> tuple[CollectorRegistry, SnapshotStats]:
    registry = CollectorRegistry()
    registry.register(JobsCollector(db))
    return registry, SnapshotStats(db, registry)
