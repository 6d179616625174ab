"""The Kubernetes and file watchers on their own: real signals, real files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import datetime, timezone
from pathlib import Path

import pytest

from spotrun.notices.base import NoticeKind
from spotrun.notices.file import FileWatcher, parse_notice
from spotrun.notices.kubernetes import KubernetesWatcher

TIMEOUT = 30.0


async def test_kubernetes_sigterm_becomes_a_reclaim_with_the_grace_as_deadline():
    watcher = KubernetesWatcher(grace_s=25.0)
    notices = watcher.watch()
    first = asyncio.ensure_future(anext(notices))
    await asyncio.sleep(0)  # let the watcher take its first step: installing its handler
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    os.kill(os.getpid(), signal.SIGTERM)
    notice = await asyncio.wait_for(first, TIMEOUT)
    assert (notice.provider, notice.kind, notice.action) == ("kubernetes", NoticeKind.RECLAIM, "terminate")
    assert notice.seconds_left(notice.received_at) == pytest.approx(25.0)
    await notices.aclose()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handed back


async def test_file_watcher_reports_a_file_once_and_again_when_it_comes_back(tmp_path: Path):
    path = tmp_path / "reclaim"
    notices = FileWatcher(path, poll_interval=0.01).watch()
    path.write_text(json.dumps({"action": "stop", "deadline": "2031-05-01T10:00:00Z"}))
    notice = await asyncio.wait_for(anext(notices), TIMEOUT)
    assert (notice.kind, notice.action) == (NoticeKind.RECLAIM, "stop")
    assert notice.deadline == datetime(2031, 5, 1, 10, tzinfo=timezone.utc)

    nxt = asyncio.ensure_future(anext(notices))
    path.touch()  # same content, new mtime: not a new notice
    path.unlink()
    await asyncio.sleep(0.1)
    assert not nxt.done()
    path.write_text("")
    again = await asyncio.wait_for(nxt, TIMEOUT)
    assert (again.kind, again.deadline) == (NoticeKind.RECLAIM, None)
    await notices.aclose()


@pytest.mark.parametrize(
    ("content", "kind", "action", "deadline"),
    [
        ("", NoticeKind.RECLAIM, "terminate", None),
        ("2015-01-05T18:02:00Z", NoticeKind.RECLAIM, "terminate", datetime(2015, 1, 5, 18, 2, tzinfo=timezone.utc)),
        ('{"kind": "rebalance"}', NoticeKind.REBALANCE, "terminate", None),
        ('{"kind": "maintenance", "action": "reboot", "deadline": 1900000000}', NoticeKind.MAINTENANCE, "reboot",
         datetime.fromtimestamp(1900000000, timezone.utc)),
        ('{"kind": "nonsense", "time": "not a time"}', NoticeKind.RECLAIM, "terminate", None),
        ("please stop", NoticeKind.RECLAIM, "terminate", None),
    ],
)
def test_file_content_forms(content, kind, action, deadline):
    notice = parse_notice(content)
    assert (notice.kind, notice.action, notice.deadline) == (kind, action, deadline)


async def test_a_half_written_file_is_read_once_finished(tmp_path: Path):
    path = tmp_path / "reclaim"
    notices = FileWatcher(path, poll_interval=0.01).watch()
    with open(path, "w") as f:
        f.write('{"deadline": "2031-0')
        f.flush()
        pending = asyncio.ensure_future(anext(notices))
        await asyncio.sleep(0.03)  # the watcher sees the partial file and waits for it to settle
        f.write('5-01T10:00:00Z"}')
    notice = await asyncio.wait_for(pending, TIMEOUT)
    assert notice.deadline == datetime(2031, 5, 1, 10, tzinfo=timezone.utc)
    await notices.aclose()


async def test_a_directory_created_later_is_polled(tmp_path: Path):
    path = tmp_path / "later" / "reclaim"  # no directory to hand inotify: the watcher polls
    notices = FileWatcher(path, poll_interval=0.01).watch()
    pending = asyncio.ensure_future(anext(notices))
    await asyncio.sleep(0.05)
    assert not pending.done()
    path.parent.mkdir()
    path.write_text('{"action": "delete"}')
    assert (await asyncio.wait_for(pending, TIMEOUT)).action == "delete"
    await notices.aclose()
