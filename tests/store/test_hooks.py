"""The agent hooks, driven directly as the supervisor drives them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from spotrun.notices.base import Notice, NoticeKind
from spotrun.sdk.atomic import save_atomic
from spotrun.store import CheckpointSync, OutputsSync, RestoreError, Store, restore

from .helpers import BUCKET, s3_url, start_moto, tree, write

NOTICE = Notice(provider="aws", kind=NoticeKind.RECLAIM, action="terminate", deadline=None)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll a condition with a generous bounded deadline (the machine is shared and loaded)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(hook):
    task = asyncio.create_task(hook.while_running())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_empty_store_starts_fresh_and_says_so(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "spotrun.store")
    hook = CheckpointSync(store_url, tmp_path / "ckpt", "job-1", attempt=1)
    env: dict[str, str] = {}
    await hook.before_start(env)
    assert env["SPOTRUN_CHECKPOINT_DIR"] == str(tmp_path / "ckpt") and (tmp_path / "ckpt").is_dir()
    assert "no snapshot of job job-1" in caplog.text
    await hook.after_exit(0)  # an empty directory: nothing published, no crash
    assert await Store.open(store_url).latest("job-1") is None


async def test_sync_on_completed_file_notice_and_exit_then_restore(store_url: str, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    store = Store.open(store_url, create=True)
    hook = CheckpointSync(store_url, ckpt, "job-1", attempt=1, sync_interval_s=3600, keep=2)
    await hook.before_start({})

    async def latest_has(name: str, content: bytes) -> bool:
        ref = await store.latest("job-1")
        if ref is None:
            return False
        out = tmp_path / f"check-{ref.id}"
        if not out.exists():
            await restore(store, "job-1", out, snapshot=ref.id)
        return tree(out).get(name) == content

    async with running(hook):
        save_atomic(ckpt / "step-1.pt", b"one" * 1000)  # a rename: complete the moment it appears
        await until(lambda: latest_has("step-1.pt", b"one" * 1000))  # long before the 1 h interval
        save_atomic(ckpt / "step-2.pt", b"two" * 1000)
        await hook.on_notice(NOTICE, budget_s=30)
        assert await latest_has("step-2.pt", b"two" * 1000)
    save_atomic(ckpt / "step-3.pt", b"three")
    await hook.after_exit(143)
    assert await latest_has("step-3.pt", b"three")
    assert len(await store.snapshots("job-1")) <= 2  # keep=2 retention

    second = CheckpointSync(store_url, tmp_path / "attempt-2", "job-1", attempt=2)
    env: dict[str, str] = {}
    await second.before_start(env)
    assert tree(Path(env["SPOTRUN_CHECKPOINT_DIR"])) == tree(ckpt)


async def test_notice_publishes_the_newest_file_first(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    ckpt = tmp_path / "ckpt"
    write(ckpt / "old.pt", b"old-v1")
    write(ckpt / "new.pt", b"new-v1")
    store = Store.open(url, create=True)
    await store.snapshot("job-1", 1, ckpt)
    write(ckpt / "old.pt", os.urandom(1 << 20))
    os.utime(ckpt / "old.pt", (1, 1))  # the older of the two changes
    write(ckpt / "new.pt", b"new-v2")
    hook = CheckpointSync(url, ckpt, "job-1", attempt=1)
    await hook.on_notice(NOTICE, budget_s=None)
    refs = await store.snapshots("job-1")
    assert [r.id for r in refs] == ["a1-s1", "a1-s2", "a1-s3"]
    await restore(store, "job-1", tmp_path / "mid", snapshot="a1-s2")
    assert tree(tmp_path / "mid") == {"new.pt": b"new-v2", "old.pt": b"old-v1"}  # newest first
    await restore(store, "job-1", tmp_path / "final")
    assert tree(tmp_path / "final") == tree(ckpt)


async def test_old_attempt_stops_publishing_once_fenced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = (tmp_path / "store").as_uri()
    old = CheckpointSync(url, tmp_path / "old", "job-1", attempt=1)
    await old.before_start({})
    write(tmp_path / "new" / "x.pt", "newer attempt")
    await Store.open(url).snapshot("job-1", 2, tmp_path / "new")
    write(tmp_path / "old" / "x.pt", "stale attempt")
    await old.after_exit(0)
    assert old.fenced and "stops publishing: attempt 2 already published" in caplog.text
    await restore(Store.open(url), "job-1", tmp_path / "out")
    assert (tmp_path / "out" / "x.pt").read_text() == "newer attempt"


async def test_outputs_uploaded_once_and_shared_read_only(store_url: str, tmp_path: Path) -> None:
    first = OutputsSync(store_url, tmp_path / "out1", "job-1", attempt=1, settle_s=0.2)
    await first.before_start({})
    done = write(tmp_path / "out1" / "metrics" / "final.json", '{"acc": 0.9}')
    done.chmod(0o444)  # read-only: finished, uploaded without waiting to settle
    store = Store.open(store_url)
    key = "jobs/job-1/outputs/attempt-1/metrics/final.json"
    async with running(first):
        await until(lambda: store.backend.head(key))
        write(tmp_path / "out1" / "log.txt", "growing")
        await until(lambda: store.backend.head("jobs/job-1/outputs/attempt-1/log.txt"))
    write(tmp_path / "out1" / "late.txt", "written just before exit")
    await first.after_exit(0)
    assert await store.backend.get("jobs/job-1/outputs/attempt-1/late.txt") == b"written just before exit"

    again = OutputsSync(store_url, tmp_path / "out1", "job-1", attempt=1)
    (tmp_path / "out1" / "log.txt").write_text("rewritten")
    await again.after_exit(0)
    assert await store.backend.get("jobs/job-1/outputs/attempt-1/log.txt") == b"growing"  # never overwritten

    second = OutputsSync(store_url, tmp_path / "out2", "job-1", attempt=2)
    env: dict[str, str] = {}
    await second.before_start(env)
    previous = Path(env["SPOTRUN_PREVIOUS_OUTPUTS"])
    assert tree(previous) == {
        "attempt-1/metrics/final.json": b'{"acc": 0.9}',
        "attempt-1/log.txt": b"growing",
        "attempt-1/late.txt": b"written just before exit",
    }
    with pytest.raises(PermissionError) if os.geteuid() else contextlib.nullcontext():
        (previous / "attempt-1" / "log.txt").write_text("no")
    assert not (previous / "attempt-1" / "log.txt").stat().st_mode & 0o222
    write(tmp_path / "out2" / "b.txt", "attempt 2")
    await second.after_exit(0)
    assert await store.backend.get("jobs/job-1/outputs/attempt-2/b.txt") == b"attempt 2"
    assert await store.backend.head("jobs/job-1/outputs/attempt-2/_previous/attempt-1/log.txt") is None


async def test_sync_survives_a_store_outage(
    s3_env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that fails is logged and retried; the job is never stopped by a flaky bucket."""
    import boto3

    monkeypatch.setenv("SPOTRUN_STORE_RETRY_TIMEOUT", "1s")
    server, endpoint = start_moto()
    port = int(endpoint.rsplit(":", 1)[1])
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    url = s3_url(endpoint)
    ckpt = tmp_path / "ckpt"
    hook = CheckpointSync(url, ckpt, "job-1", attempt=1, sync_interval_s=3600)
    await hook.before_start({})
    store = Store.open(url)
    try:
        async with running(hook):
            server.stop()
            save_atomic(ckpt / "step-1.pt", b"during the outage")

            async def warned() -> bool:
                return "checkpoint sync failed, will retry" in caplog.text

            await until(warned)
            server, _ = start_moto(port)

            async def synced() -> bool:
                return await store.latest("job-1") is not None

            await until(synced)
    finally:
        server.stop()


async def test_restoring_over_foreign_content_keeps_it_beside_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A relaunch never deletes what it did not put in the checkpoint directory: user files,
    temp files and symlinks move aside whole; only files identical to the snapshot's go."""
    url = (tmp_path / "store").as_uri()
    ckpt = tmp_path / "ckpt"
    write(ckpt / "model.pt", b"weights")
    write(ckpt / "cfg" / "run.yaml", "lr: 1")
    await Store.open(url, create=True).snapshot("job-1", 1, ckpt)
    write(ckpt / "notes.txt", "mine")
    write(ckpt / "cfg" / "run.yaml", "lr: 2")  # differs from the snapshot's
    write(ckpt / ".model.pt.spotrun-tmp.abcd", "half")
    (ckpt / "data").symlink_to(tmp_path / "elsewhere")
    write(tmp_path / "elsewhere" / "big.bin", "not ours")
    (ckpt / "empty-dir").mkdir()

    caplog.set_level(logging.INFO, "spotrun.store")
    await CheckpointSync(url, ckpt, "job-1", attempt=2).before_start({})

    assert tree(ckpt) == {"model.pt": b"weights", "cfg/run.yaml": b"lr: 1"}
    assert sorted(p.name for p in ckpt.iterdir()) == ["cfg", "model.pt"]
    [kept] = tmp_path.glob("ckpt.spotrun-kept-*")
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*")) == [
        ".model.pt.spotrun-tmp.abcd", "cfg", "cfg/run.yaml", "data", "empty-dir", "notes.txt",
    ]  # fmt: skip
    assert (kept / "notes.txt").read_text() == "mine" and (kept / "cfg" / "run.yaml").read_text() == "lr: 2"
    assert (kept / "data").is_symlink() and os.readlink(kept / "data") == str(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "big.bin").read_text() == "not ours"
    assert not list(tmp_path.glob(".ckpt*"))  # no temp or swapped-out directory left behind
    [line] = [r.getMessage() for r in caplog.records if "nothing was deleted" in r.getMessage()]
    assert str(kept) in line and "held 5 entries" in line and "'cfg/run.yaml'" in line

    await CheckpointSync(url, ckpt, "job-1", attempt=3).before_start({})  # only the snapshot's files
    assert len(list(tmp_path.glob("ckpt.spotrun-kept-*"))) == 1  # nothing new to keep


async def test_a_checkpoint_dir_holding_the_working_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (tmp_path / "store").as_uri()
    work = tmp_path / "work"
    write(work / "train.py", "print('the code')")
    await Store.open(url, create=True).snapshot("job-1", 1, work)
    write(work / "train.py", "print('newer code')")
    monkeypatch.chdir(work / ".." / "work")
    with pytest.raises(RestoreError, match="working directory"):
        await CheckpointSync(url, Path("."), "job-1", attempt=2).before_start({})
    assert (work / "train.py").read_text() == "print('newer code')"
