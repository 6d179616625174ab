"""A file appearing at a path is a notice: the hook for anything that is not a cloud endpoint.

Schedulers, sidecars (Metaflow's spot monitor writes the termination time as text) and people
(`touch /tmp/reclaim`) can all create a file. The content is optional: a JSON object with
`deadline` / `action` / `kind` (and `provider`), or a bare timestamp; anything else is a reclaim
with no deadline known. On Linux, inotify on the parent directory wakes the watcher within a
millisecond at no idle cost (through libc, no dependency); elsewhere, or when the directory is
missing, a `stat` every 0.1 s keeps the p99 under 0.2 s.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import struct
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spotrun.notices.base import Notice, NoticeKind, Watcher

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.1
_BACKSTOP_S = 2.0  # with inotify, still look this often: network filesystems send no events
# IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE. Not IN_CREATE or
# IN_MODIFY: a file being written is looked at once its writer closes it, complete.
_IN_MASK = 0x4 | 0x8 | 0x40 | 0x80 | 0x200
_IN_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name
# A writer that is not atomic leaves JSON half-written for a moment; a few quick re-reads catch
# the finished content. An empty file is final: that is `touch`, the common trigger, kept fast.
_SETTLE_TRIES = 3
_SETTLE_DELAY = 0.02


def parse_time(value: Any) -> datetime | None:
    """An aware UTC time from ISO 8601 text (`Z` allowed) or epoch seconds; None if neither."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    text = str(value).strip()
    try:
        return datetime.fromtimestamp(float(text), timezone.utc)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


def parse_notice(text: str, provider: str = "file") -> Notice:
    """The notice a file's content describes; never raises, because any file is a notice."""
    data: Any = None
    try:
        data = json.loads(text)
    except ValueError:
        pass
    if not isinstance(data, dict):
        # Bare text: a termination time (Metaflow's format) or nothing useful.
        deadline = parse_time(text) if text.strip() else None
        return Notice(provider, NoticeKind.RECLAIM, "terminate", deadline, raw=text or None)
    try:
        kind = NoticeKind(str(data.get("kind", "reclaim")).lower())
    except ValueError:
        log.warning("notice file: unknown kind %r, treating it as a reclaim", data.get("kind"))
        kind = NoticeKind.RECLAIM
    return Notice(
        provider=str(data.get("provider") or provider),
        kind=kind,
        action=str(data.get("action") or "terminate"),
        deadline=parse_time(data.get("deadline", data.get("time"))),
        raw=data,
    )


def _looks_unfinished(text: str) -> bool:
    stripped = text.strip()
    if stripped[:1] not in ("{", "["):
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return True
    return False


class _FileEvents:
    """Wakes a waiter when one file in a directory is written, renamed or removed (inotify)."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._name = os.fsencode(name)
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(fd, self._drain)

    @classmethod
    def open(cls, path: Path) -> _FileEvents | None:
        """None where inotify is unavailable (not Linux, no such directory): then poll."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        if libc.inotify_add_watch(fd, os.fsencode(path.parent), _IN_MASK) < 0:
            os.close(fd)
            return None
        return cls(fd, path.name)

    def _drain(self) -> None:
        try:
            while data := os.read(self._fd, 65536):
                offset = 0
                while offset + _IN_EVENT.size <= len(data):
                    length = _IN_EVENT.unpack_from(data, offset)[3]
                    start = offset + _IN_EVENT.size
                    if data[start : start + length].rstrip(b"\0") == self._name:
                        self._changed.set()
                    offset = start + length
        except BlockingIOError:
            pass

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
        self._changed.clear()  # before the caller looks again: nothing after this is missed

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)


class FileWatcher(Watcher):
    provider = "file"

    def __init__(self, path: Path, poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        if poll_interval <= 0:
            raise ValueError(f"the poll interval must be positive, not {poll_interval}")
        self.path = Path(path)
        self.poll_interval = poll_interval

    async def _read(self) -> str | None:
        text: str | None = None
        for attempt in range(_SETTLE_TRIES + 1):
            try:
                text = self.path.read_text(errors="replace")
            except FileNotFoundError:
                return None
            except OSError as exc:
                log.warning("cannot read the notice file %s: %s", self.path, exc)
                return ""
            if not _looks_unfinished(text) or attempt == _SETTLE_TRIES:
                break
            await asyncio.sleep(_SETTLE_DELAY)
        return text

    async def watch(self) -> AsyncIterator[Notice]:
        last_stat: tuple[int, int, int] | None = None
        last_key: tuple[object, ...] | None = None
        events = _FileEvents.open(self.path)
        log.debug("watching %s (%s)", self.path, "inotify" if events else f"every {self.poll_interval}s")
        try:
            while True:
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    last_stat = last_key = None  # a file that comes back is a new notice
                except OSError as exc:
                    log.warning("cannot stat the notice file %s: %s", self.path, exc)
                else:
                    signature = (st.st_ino, st.st_mtime_ns, st.st_size)
                    if signature != last_stat:
                        last_stat = signature
                        text = await self._read()
                        if text is not None:
                            notice = parse_notice(text)
                            key = (notice.kind, notice.action, notice.deadline)
                            if key != last_key:
                                last_key = key
                                yield notice
                if events is not None:
                    await events.wait(_BACKSTOP_S)
                else:
                    await asyncio.sleep(self.poll_interval)
        finally:
            if events is not None:
                events.close()
