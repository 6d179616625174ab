"""Clocks for the sim provider: wall time for scale tests, virtual time for cost studies.

A virtual clock moves only when its driver says so, so a week of a sweep replays in seconds and
every run of it is the same. `installed()` makes `time.time()` read the virtual clock for the
code that asks it directly (the controller, its policies): they run unchanged, in virtual time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch, as `time.time()`."""


class RealClock:
    """Wall time."""

    def time(self) -> float:
        return time.time()


class VirtualClock:
    """Time that stands still until `advance`/`set` moves it (never backwards)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def time(self) -> float:
        return self.now

    def set(self, when: float) -> None:
        if when < self.now:
            raise ValueError(f"a virtual clock never goes back ({when} < {self.now})")
        self.now = float(when)

    def advance(self, seconds: float) -> None:
        self.set(self.now + seconds)

    @contextlib.contextmanager
    def installed(self) -> Iterator[VirtualClock]:
        """`time.time()` reads this clock inside the block (monotonic clocks, hence asyncio's
        timers, stay real: a virtual pass never sleeps)."""
        real = time.time
        time.time = self.time  # type: ignore[assignment]
        try:
            yield self
        finally:
            time.time = real  # type: ignore[assignment]
