"""Retention, garbage collection and space accounting.

GC is safe beside running writers because of two rules (docs/store-format.md, "GC"):
GC deletes a chunk only if no manifest names it AND it is older than the grace period,
measured from before GC listed the manifests; a writer reuses a chunk without uploading it
only if the manifest it builds on names it, or it uploaded it itself within half a grace
period (and publishes within that half). So a chunk a writer counts on is either named by a
manifest GC sees, or too young for GC to delete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from spotrun.store.format import chunk_key
from spotrun.store.store import DEFAULT_GRACE_S, Store


@dataclass
class GcReport:
    pruned: list[str] = field(default_factory=list)  # job/snapshot ids whose manifests were removed
    deleted_chunks: int = 0
    freed_bytes: int = 0
    young_unreferenced: int = 0  # unreferenced but inside the grace period: kept for now
    referenced_chunks: int = 0
    dry_run: bool = False


async def gc(
    store: Store, *, keep: int | None = None, grace_s: float = DEFAULT_GRACE_S, dry_run: bool = False
) -> GcReport:
    """Prune each job to its newest `keep` snapshots (pins stay), then sweep unreferenced chunks."""
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
            referenced |= manifest.chunk_set()
    report.referenced_chunks = len(referenced)
    doomed_chunks = []
    for obj in await store.chunk_objects():
        digest = obj.key.rsplit("/", 1)[-1]
        if digest in referenced:
            continue
        if obj.last_modified >= cutoff:
            report.young_unreferenced += 1
            continue
        doomed_chunks.append(chunk_key(digest))
        report.freed_bytes += obj.size
    report.deleted_chunks = len(doomed_chunks)
    if not dry_run:
        await store.backend.delete(doomed_chunks)
    return report


@dataclass
class JobUsage:
    job_id: str
    snapshots: int
    latest: str | None
    latest_size: int  # bytes a restore of the latest snapshot writes
    unique_bytes: int  # chunk bytes no other job references (what deleting the job frees)
    referenced_bytes: int  # chunk bytes referenced by any of its snapshots


async def du(store: Store) -> tuple[list[JobUsage], int, int]:
    """Per-job usage, total chunk bytes stored, and bytes of chunks no manifest references."""
    sizes = {o.key.rsplit("/", 1)[-1]: o.size for o in await store.chunk_objects()}
    per_job: dict[str, set[str]] = {}
    latest: dict[str, tuple[str, int]] = {}
    counts: dict[str, int] = {}
    for ref, manifest in await store.all_manifests():
        per_job.setdefault(ref.job_id, set()).update(manifest.chunk_set())
        latest[ref.job_id] = (ref.id, manifest.total_size)  # refs arrive oldest first
        counts[ref.job_id] = counts.get(ref.job_id, 0) + 1
    owners: dict[str, int] = {}
    for chunks in per_job.values():
        for c in chunks:
            owners[c] = owners.get(c, 0) + 1
    usage = [
        JobUsage(
            job,
            counts[job],
            latest[job][0],
            latest[job][1],
            sum(sizes.get(c, 0) for c in chunks if owners[c] == 1),
            sum(sizes.get(c, 0) for c in chunks),
        )
        for job, chunks in sorted(per_job.items())
    ]
    unreferenced = sum(size for c, size in sizes.items() if c not in owners)
    return usage, sum(sizes.values()), unreferenced
