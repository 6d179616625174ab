"""Snapshot and restore through the same code paths a user's bucket takes (file:// and moto S3)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spotrun.store import Fenced, NoSnapshot, RestoreError, Store, StoreError, StoreFormatError, restore
from spotrun.store.format import CONFIG_KEY, check_job_id

from .helpers import tree, write

CHUNK = 64 * 1024


def make_checkpoint(root: Path) -> None:
    write(root / "model.pt", os.urandom(5 * CHUNK + 123))
    write(root / "optim/state.pt", os.urandom(3 * CHUNK))
    write(root / "step.txt", "100")
    write(root / "empty", b"")
    write(root / ".model.pt.spotrun-tmp.abcd", b"half-written")  # the SDK's temp name: skipped


async def test_roundtrip_restores_every_file_mode_and_mtime(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_checkpoint(src)
    (src / "step.txt").chmod(0o600)
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    info = await store.snapshot("job-1", 1, src)
    assert info.published and info.id == "a1-s1"
    assert info.files == 4 and info.uploaded_chunks == 6 + 3 + 1

    out = tmp_path / "out"
    result = await restore(store, "job-1", out)
    assert result.snapshot == "a1-s1"
    expected = {k: v for k, v in tree(src).items() if "spotrun-tmp" not in k}
    assert tree(out) == expected
    assert (out / "step.txt").stat().st_mode & 0o777 == 0o600
    assert (out / "model.pt").stat().st_mtime_ns == (src / "model.pt").stat().st_mtime_ns
    assert not list(tmp_path.glob(".out.spotrun-restore-*"))


async def test_incremental_uploads_only_changed_chunks(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_checkpoint(src)
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    await store.snapshot("job-1", 1, src)
    with open(src / "model.pt", "r+b") as f:  # change one chunk in place
        f.seek(2 * CHUNK + 10)
        f.write(b"changed")
    info = await store.snapshot("job-1", 1, src)
    assert info.sequence == 2 and info.changed_files == 1
    assert info.uploaded_chunks == 1 and info.uploaded_bytes == CHUNK
    again = await store.snapshot("job-1", 1, src)
    assert not again.published and "nothing changed" in again.note
    out = tmp_path / "out"
    await restore(store, "job-1", out)
    assert (out / "model.pt").read_bytes() == (src / "model.pt").read_bytes()


async def test_restore_after_restore_reuses_everything(store_url: str, tmp_path: Path) -> None:
    """A restored directory matches its manifest by size and mtime, so the next sync reads nothing."""
    src = tmp_path / "src"
    make_checkpoint(src)
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    await store.snapshot("job-1", 1, src)
    out = tmp_path / "attempt2"
    await restore(store, "job-1", out)
    write(out / "step-200.txt", "200")
    info = await store.snapshot("job-1", 2, out)
    assert info.id == "a2-s1" and info.changed_files == 1 and info.uploaded_chunks == 1


async def test_empty_and_missing_directories_are_clear(store_url: str, tmp_path: Path) -> None:
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    (tmp_path / "empty").mkdir()
    info = await store.snapshot("job-1", 1, tmp_path / "empty")
    assert not info.published and "is empty" in info.note
    with pytest.raises(StoreError, match="does not exist"):
        await store.snapshot("job-1", 1, tmp_path / "missing")
    with pytest.raises(NoSnapshot, match="has no snapshot"):
        await restore(store, "job-1", tmp_path / "out")
    assert await store.latest("job-1") is None


async def test_older_attempt_is_fenced(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_checkpoint(src)
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    await store.snapshot("job-1", 2, src)
    write(src / "late.txt", "from attempt 1")
    with pytest.raises(Fenced, match="attempt 2 already published"):
        await store.snapshot("job-1", 1, src)
    latest = await store.latest("job-1")
    assert latest is not None and (latest.attempt, latest.sequence) == (2, 1)


async def test_manifest_is_published_with_a_conditional_create(store_url: str, tmp_path: Path) -> None:
    """A published manifest can never be replaced: the store itself refuses (If-None-Match: * on S3)."""
    src = tmp_path / "src"
    make_checkpoint(src)
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    await store.snapshot("job-1", 1, src)
    key = "jobs/job-1/snapshots/a000001-s00000001.json"
    original = await store.backend.get(key)
    assert not await store.backend.put(key, b"{}", create=True)
    assert await store.backend.get(key) == original


async def test_large_file_upload_is_multipart_and_write_once(store_url: str, tmp_path: Path) -> None:
    """Outputs go up whole (multipart past obstore's 5 MiB parts) and are never overwritten."""
    store = Store.open(store_url, create=True)
    big = write(tmp_path / "big.bin", os.urandom(12 * 1024 * 1024 + 5))
    assert await store.backend.put("outputs/big.bin", big, create=True)
    write(tmp_path / "other.bin", os.urandom(11 * 1024 * 1024))
    assert not await store.backend.put("outputs/big.bin", tmp_path / "other.bin", create=True)
    assert await store.backend.get("outputs/big.bin") == big.read_bytes()


async def test_unknown_format_version_is_refused(store_url: str, tmp_path: Path) -> None:
    store = Store.open(store_url, create=True)
    await store.chunk_size()  # creates config.json
    config = json.loads(await store.backend.get(CONFIG_KEY))
    config["version"] = 99
    await store.backend.put(CONFIG_KEY, json.dumps(config).encode())
    with pytest.raises(StoreFormatError, match="v99.*Upgrade spotrun"):
        await Store.open(store_url).jobs()
    config["version"] = 1  # format v1: one object per chunk
    await store.backend.put(CONFIG_KEY, json.dumps(config).encode())
    with pytest.raises(StoreFormatError, match="v1.*older spotrun wrote it.*new store URL"):
        await Store.open(store_url).jobs()


async def test_file_rewritten_while_read_waits_for_the_next_round(tmp_path: Path) -> None:
    """A file whose mtime changes during the read is not snapshotted half-written."""
    src = tmp_path / "src"
    make_checkpoint(src)
    store = Store.open((tmp_path / "store").as_uri(), create=True, chunk_size=CHUNK)
    calls = 0

    def rewrite(_: int) -> None:  # runs after each chunk is uploaded: the writer keeps writing
        nonlocal calls
        calls += 1
        if calls == 1:
            with open(src / "model.pt", "r+b") as f:
                f.write(b"rewritten")
                os.utime(f.fileno(), ns=(1, 1))

    info = await store.snapshot("job-1", 1, src, progress=rewrite)
    assert info.skipped == ["model.pt"]
    out = tmp_path / "out"
    await restore(store, "job-1", out)
    assert "model.pt" not in tree(out)  # no older version existed: it is simply not there yet
    info = await store.snapshot("job-1", 1, src)
    assert info.skipped == []
    await restore(store, "job-1", out, replace=True)
    assert (out / "model.pt").read_bytes() == (src / "model.pt").read_bytes()


async def test_restore_refuses_a_non_empty_target_unless_replacing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_checkpoint(src)
    store = Store.open((tmp_path / "store").as_uri(), create=True, chunk_size=CHUNK)
    await store.snapshot("job-1", 1, src)
    out = write(tmp_path / "out" / "old.txt", "old").parent
    with pytest.raises(RestoreError, match="not empty"):
        await restore(store, "job-1", out)
    await restore(store, "job-1", out, replace=True)
    assert "old.txt" not in tree(out) and "model.pt" in tree(out)


def test_missing_file_store_bad_urls_and_job_ids_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store.open((tmp_path / "nope").as_uri())
    with pytest.raises(StoreError, match="unsupported store URL"):
        Store.open("ftp://host/x")
    with pytest.raises(StoreError, match="invalid job id"):
        check_job_id("../x")


async def test_no_empty_snapshot_while_the_only_file_is_rewritten_during_the_first_sync(tmp_path: Path) -> None:
    """docs/store-format.md: a snapshot never holds 0 files; the first one waits for the file."""
    src = tmp_path / "src"
    write(src / "model.pt", os.urandom(3 * CHUNK))
    store = Store.open((tmp_path / "store").as_uri(), create=True, chunk_size=CHUNK)

    def rewrite(_: int) -> None:
        with open(src / "model.pt", "r+b") as f:
            f.write(b"rewritten")
            os.utime(f.fileno(), ns=(1, 1))

    info = await store.snapshot("job-1", 1, src, progress=rewrite)
    assert (info.published, info.skipped, info.files) == (False, ["model.pt"], 1)
    assert await store.snapshots("job-1") == []
    info = await store.snapshot("job-1", 1, src)
    assert info.published and info.id == "a1-s1"
