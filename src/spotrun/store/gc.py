"""Retention, garbage collection and space accounting.

GC is safe beside running writers because of two rules (docs/store-format.md, "GC"):
GC deletes a pack only if no manifest names it AND it is older than the grace period,
measured from before GC listed the manifests; a writer reuses a chunk without uploading it
only if the manifest it builds on names its pack, or it uploaded that pack itself within half a
grace period (and publishes within that half). So a pack a writer counts on is either named by
a manifest GC sees, or too young for GC to delete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from spotrun.store.store import DEFAULT_GRACE_S, Store


@dataclass
class GcReport:
    pruned: list[str] = field(default_factory=list)  # job/snapshot ids whose manifests were removed
    deleted_packs: int = 0
    freed_bytes: int = 0
    young_unreferenced: int = 0  # unreferenced but inside the grace period: kept for now
    referenced_packs: int = 0
    dry_run: bool = False


async def gc(
    store: Store, *, keep: int | None = None, grace_s: float = DEFAULT_GRACE_S, dry_run: bool = False
) -> GcReport:
    """Prune each job to its newest `keep` snapshots (pins stay), then sweep unreferenced packs."""
    report = GcReport(dry_run=dry_run)
    if keep is not None:
        for job in await store.jobs():
            doomed = await store.prune(job, keep, dry_run=dry_run)
            report.pruned += [f"{job}/{r.id}" for r in doomed]
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)  # before listing manifests
    pruned = set(report.pruned)
    referenced: set[str] = set()
    for ref, manifest in await store.all_manifests():
        if f"{ref.job_id}/{ref.id}" not in pruned:
            referenced |= manifest.pack_set()
    report.referenced_packs = len(referenced)
    doomed = []
    for obj in await store.pack_objects():
        name = obj.key.rsplit("/", 1)[-1]
        if name in referenced:
            continue
        if obj.last_modified >= cutoff:
            report.young_unreferenced += 1
            continue
        doomed.append(obj.key)
        report.freed_bytes += obj.size
    report.deleted_packs = len(doomed)
    if not dry_run:
        await store.backend.delete(doomed)
    return report


@dataclass
class JobUsage:
    job_id: str
    snapshots: int
    latest: str | None
    latest_size: int  # bytes a restore of the latest snapshot writes
    unique_bytes: int  # pack bytes no other job references (what deleting the job frees)
    referenced_bytes: int  # pack bytes referenced by any of its snapshots


async def du(store: Store) -> tuple[list[JobUsage], int, int]:
    """Per-job usage, total pack bytes stored, and bytes of packs no manifest references."""
    sizes = {o.key.rsplit("/", 1)[-1]: o.size for o in await store.pack_objects()}
    per_job: dict[str, set[str]] = {}
    latest: dict[str, tuple[str, int]] = {}
    counts: dict[str, int] = {}
    for ref, manifest in await store.all_manifests():
        per_job.setdefault(ref.job_id, set()).update(manifest.pack_set())
        latest[ref.job_id] = (ref.id, manifest.total_size)  # refs arrive oldest first
        counts[ref.job_id] = counts.get(ref.job_id, 0) + 1
    owners: dict[str, int] = {}
    for packs in per_job.values():
        for p in packs:
            owners[p] = owners.get(p, 0) + 1
    usage = [
        JobUsage(
            job,
            counts[job],
            latest[job][0],
            latest[job][1],
            sum(sizes.get(p, 0) for p in packs if owners[p] == 1),
            sum(sizes.get(p, 0) for p in packs),
        )
        for job, packs in sorted(per_job.items())
    ]
    unreferenced = sum(size for p, size in sizes.items() if p not in owners)
    return usage, sum(sizes.values()), unreferenced
