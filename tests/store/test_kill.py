"""kill -9 the syncing process at random points; the newest snapshot must always restore whole."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import blake3

from spotrun.store import Store, restore, verify

from .helpers import s3_url

CHURN = Path(__file__).with_name("churn.py")


def intact(data: bytes) -> bool:
    return len(data) >= 32 and blake3.blake3(data[:-32]).digest() == data[-32:]


async def kill_and_check(url: str, tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    src = tmp_path / "src"
    src.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    restored_ids: set[str] = set()
    for i in range(kills):
        attempt = 1 + i // 10  # a new attempt every 10 kills: sequences and fencing across restarts
        child = subprocess.Popen(
            [sys.executable, str(CHURN), url, str(src), "job-1", str(attempt)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline().startswith("synced"), "the child never completed a first sync"
        time.sleep(rng.uniform(0, 0.3))  # a random point in a later sync: this is the fault, not a wait
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()

        store = Store.open(url)
        latest = await store.latest("job-1")
        assert latest is not None
        out = tmp_path / f"out-{i}"
        info = await restore(store, "job-1", out)
        assert info.snapshot == latest.id
        files = {p.name: p.read_bytes() for p in out.iterdir()}
        assert "step.txt" in files
        assert all(intact(data) for data in files.values()), f"a torn file in {latest.id}"
        assert (await verify(store, "job-1", latest.id)).ok
        restored_ids.add(latest.id)
    assert len(restored_ids) > kills // 2  # the kills landed across many different syncs


async def test_kill_9_during_sync_file_store(tmp_path: Path) -> None:
    await kill_and_check((tmp_path / "store").as_uri(), tmp_path, kills=50, seed=1)


async def test_kill_9_during_sync_s3_store(s3_endpoint: str, tmp_path: Path) -> None:
    await kill_and_check(s3_url(s3_endpoint), tmp_path, kills=12, seed=2)
