"""The agent exits by a notice's deadline whatever the store does, and says what is durable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spotrun.store import Store

from .helpers import BUCKET, StoreProxy

JOB = """
import os, signal, sys, time
def save(name, data):
    tmp = os.path.join(sys.argv[1], "." + name + ".spotrun-tmp.x")
    open(tmp, "wb").write(data)
    os.replace(tmp, os.path.join(sys.argv[1], name))
def on_term(*_):
    save("final.pt", os.urandom(300_000))  # what the notice would have saved
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
save("step.pt", os.urandom(300_000))
while True:
    time.sleep(0.05)
"""


@pytest.mark.parametrize("fault", ["hang", "refuse"])
def test_a_store_gone_bad_at_the_notice_costs_the_final_snapshot_not_the_deadline(
    fault: str, spotrun_cmd: list[str], s3_endpoint: str, tmp_path: Path
) -> None:
    proxy = StoreProxy(s3_endpoint)
    prefix = f"deadline-{fault}-{os.getpid()}"
    url = f"s3://{BUCKET}/{prefix}?endpoint={proxy.endpoint}"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    agent = subprocess.Popen(
        [*spotrun_cmd, "exec", "--provider", "file", "--watch-file", str(tmp_path / "reclaim"),
         "--notice-file", str(tmp_path / "notice.json"), "--kill-margin", "2s",
         "--checkpoint-dir", str(ckpt), "--store", url, "--sync-interval", "1h", "--job-id", "job-d",
         "--", sys.executable, "-c", JOB, str(ckpt)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        direct = Store.open(f"s3://{BUCKET}/{prefix}?endpoint={s3_endpoint}")
        deadline = time.monotonic() + 60
        while not _run(direct.latest("job-d")):
            assert time.monotonic() < deadline and agent.poll() is None, "the first snapshot never came"
            time.sleep(0.1)
        proxy.mode = fault
        notice_deadline = datetime.now(UTC) + timedelta(seconds=8)
        (tmp_path / "reclaim.tmp").write_text(json.dumps({"deadline": notice_deadline.isoformat()}))
        (tmp_path / "reclaim.tmp").rename(tmp_path / "reclaim")
        _, log = agent.communicate(timeout=60)
        exited = datetime.now(UTC)
    finally:
        agent.kill()
        proxy.close()
    assert agent.returncode == 75, log
    assert exited < notice_deadline + timedelta(seconds=2), f"exited {exited - notice_deadline} late:\n{log}"
    last = log.strip().splitlines()[-1]
    assert "the final snapshot of job job-d was lost" in last, log
    assert "the last durable snapshot of job job-d is a1-s1: a restart resumes from it" in last
    assert "Debug source" not in log
    assert [r.id for r in _run(direct.snapshots("job-d"))] == ["a1-s1"]


def _run(coro):
    import asyncio

    return asyncio.run(coro)
