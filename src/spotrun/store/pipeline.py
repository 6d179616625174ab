"""Plumbing shared by the snapshot and restore chunk pipelines: reusable buffers, whole-buffer
positional I/O, and a gather that cancels siblings on failure.

Chunks move in segments (up to `SEGMENT_CHUNKS` consecutive chunks of one file) so that each
trip to a store thread does one large read instead of one per chunk, into a buffer that
is already mapped: a fresh 1 MiB `bytes` per chunk costs 256 page faults, which on a VM take
about as long as copying the data (docs/store-format.md, "Performance").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")

SEGMENT_CHUNKS = 16  # 8 MiB of the default 512 KiB chunks: one pack, one read, one GET


def trips(concurrency: int, per_trip: int) -> int:
    """Segments in flight for `concurrency` chunk transfers, plus one whose read overlaps them."""
    return -(-concurrency // per_trip) + 1


class BufferPool:
    """Idle segment buffers kept for the next snapshot or restore.

    Taken and returned on the event loop only. A buffer whose worker thread may still be running
    (its await was cancelled or failed) is never returned, so no two users ever share one.
    """

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._idle: dict[int, list[bytearray]] = {}

    def take(self, size: int) -> bytearray:
        idle = self._idle.get(size)
        return idle.pop() if idle else bytearray(size)

    def give(self, buf: bytearray) -> None:
        idle = self._idle.setdefault(len(buf), [])
        if len(idle) < self.keep:
            idle.append(buf)


def pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Fill `view` from `offset`; fewer bytes only at end of file."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


def pwrite_all(fd: int, buffers: list, offset: int) -> None:
    """Write the buffers back to back from `offset`, retrying short writes."""
    for buffer in buffers:
        view = memoryview(buffer)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


async def gather_all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Like asyncio.gather, but the first failure cancels the rest (and waits for them), so no
    sibling keeps writing into a directory that is being removed."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
