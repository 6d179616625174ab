"""Running a real watcher against a real endpoint and waiting on what it yields."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from spotrun.emulators.base import Emulator
from spotrun.notices.base import Notice, Watcher

TIMEOUT_S = 20.0  # generous: the machine is shared with other test runs


async def wait_until(condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Collector:
    """Runs `watcher.watch()` in the background and keeps every notice it yields."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.notices: list[Notice] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for notice in self.watcher.watch():
            self.notices.append(notice)

    async def wait_count(self, count: int) -> list[Notice]:
        await wait_until(lambda: len(self.notices) >= count or self.task.done(), f"{count} notice(s)")
        self.assert_alive()
        return self.notices

    def assert_alive(self) -> None:
        """watch() must never end or raise, whatever the endpoint did."""
        if self.task.done():
            raise AssertionError(f"watch() ended: {self.task.exception()!r}")

    async def close(self) -> None:
        self.assert_alive()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.watcher.aclose()


async def polls(emulator: Emulator, path: str, more: int) -> None:
    """Wait until the watcher has asked `path` `more` more times (so it had every chance)."""
    target = emulator.requests[path] + more
    await wait_until(lambda: emulator.requests[path] >= target, f"{more} more requests to {path}")


def assert_close(actual: datetime | None, expected: datetime, slack_s: float = 2.0) -> None:
    assert actual is not None, "the notice has no deadline"
    assert abs((actual - expected).total_seconds()) <= slack_s, (actual, expected)
