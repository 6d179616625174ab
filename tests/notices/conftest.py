from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from spotrun.emulators.base import Emulator
from spotrun.notices.base import Watcher

from .helpers import Collector

FAST = 0.05  # poll interval in tests: many polls, short waits


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., object]]:
    """Start emulators on ephemeral ports; all are stopped at the end of the test."""
    started: list[Emulator] = []

    async def start(emulator: Emulator, **where: object) -> str:
        url = await emulator.start(**where)  # type: ignore[arg-type]
        started.append(emulator)
        return url

    yield start
    for emulator in started:
        await emulator.stop()


@pytest.fixture
async def collect() -> AsyncIterator[Callable[[Watcher], Collector]]:
    """Run watchers in the background; each is checked alive and closed at the end."""
    running: list[Collector] = []

    def start(watcher: Watcher) -> Collector:
        collector = Collector(watcher)
        running.append(collector)
        return collector

    yield start
    for collector in running:
        await collector.close()
