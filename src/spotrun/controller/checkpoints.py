"""What the controller does with a job's kept checkpoints (`on_success: delete`)."""

from __future__ import annotations


async def delete_checkpoints(store_url: str, job_id: str) -> int:
    """Remove every snapshot manifest of the job; its chunks go at the next `spotrun ckpt gc`
    (they may be shared with other jobs' snapshots). Returns how many snapshots were removed."""
    from spotrun.store.store import Store

    store = Store.open(store_url)
    refs = await store.snapshots(job_id)
    if refs:
        await store.backend.delete([r.key for r in refs])
    return len(refs)
