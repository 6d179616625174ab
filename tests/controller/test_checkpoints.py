"""`on_success: delete` against the real checkpoint store on a file:// URL."""

from __future__ import annotations

from pathlib import Path

from spotrun.controller.checkpoints import delete_checkpoints
from spotrun.store.store import Store


async def test_delete_removes_only_that_jobs_snapshots(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "ckpt-000000000001.pkl").write_bytes(b"weights" * 100)
    store = Store.open(url, create=True)
    await store.snapshot("done-job", 1, src)
    (src / "ckpt-000000000002.pkl").write_bytes(b"more" * 100)
    await store.snapshot("done-job", 1, src)
    await store.snapshot("other-job", 1, src)
    assert len(await store.snapshots("done-job")) == 2

    assert await delete_checkpoints(url, "done-job") == 2
    assert await Store.open(url).snapshots("done-job") == []
    assert len(await Store.open(url).snapshots("other-job")) == 1
    assert await delete_checkpoints(url, "done-job") == 0
