"""Retention, pins and garbage collection beside a writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spotrun.store import Store, StoreError, du, gc, restore, verify

from .helpers import tree, write

CHUNK = 64 * 1024


async def snapshots(store: Store, src: Path, count: int) -> None:
    for _i in range(count):
        write(src / "weights.pt", os.urandom(2 * CHUNK))
        write(src / "frozen.pt", b"f" * CHUNK)  # the same bytes every time: one shared chunk
        await store.snapshot("job-1", 1, src)


async def test_retention_keeps_newest_and_pinned_then_gc_frees_their_chunks(
    store_url: str, tmp_path: Path
) -> None:
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    src = tmp_path / "src"
    await snapshots(store, src, 5)
    await store.pin("job-1", "a1-s2")
    dry = await gc(store, keep=2, grace_s=0, dry_run=True)
    assert dry.pruned == ["job-1/a1-s1", "job-1/a1-s3"] and dry.deleted_packs == 2
    assert len(await store.snapshots("job-1")) == 5  # a dry run deletes nothing

    report = await gc(store, keep=2, grace_s=0)
    assert report.pruned == ["job-1/a1-s1", "job-1/a1-s3"]
    assert report.deleted_packs == 2 and report.freed_bytes == 4 * CHUNK
    assert [r.id for r in await store.snapshots("job-1")] == ["a1-s2", "a1-s4", "a1-s5"]
    assert (await verify(store)).ok  # nothing a kept snapshot needs was deleted
    await restore(store, "job-1", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    usage, total, unreferenced = await du(store)
    assert [(u.job_id, u.snapshots, u.latest) for u in usage] == [("job-1", 3, "a1-s5")]
    assert total == (3 * 2 + 1) * CHUNK and unreferenced == 0


async def test_grace_period_protects_young_unreferenced_packs(tmp_path: Path) -> None:
    """A chunk uploaded by a sync that has not published yet is unreferenced but young: it stays."""
    store = Store.open((tmp_path / "store").as_uri(), create=True, chunk_size=CHUNK)
    src = tmp_path / "src"
    await snapshots(store, src, 1)
    await store.backend.put("packs/ab/" + "ab" * 32, b"in flight")  # a writer mid-snapshot
    report = await gc(store, grace_s=3600)
    assert report.deleted_packs == 0 and report.young_unreferenced == 1
    assert await store.backend.head("packs/ab/" + "ab" * 32) is not None
    report = await gc(store, grace_s=0)
    assert report.deleted_packs == 1


async def test_keep_zero_is_refused(tmp_path: Path) -> None:
    store = Store.open((tmp_path / "store").as_uri(), create=True, chunk_size=CHUNK)
    await snapshots(store, tmp_path / "src", 1)
    with pytest.raises(StoreError, match="at least 1"):
        await gc(store, keep=0)
