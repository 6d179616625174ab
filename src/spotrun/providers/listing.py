"""A provider's view of its fleet, shared by every caller for a moment.

A reconcile pass asks about each of its instances; the cloud should be asked once per pass,
whatever the number of jobs. One listing serves every caller within `ttl_s`, and callers that
arrive while it is being made wait for that one rather than starting another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedListing(Generic[T]):
    def __init__(self, fetch: Callable[[], Awaitable[T]], ttl_s: float) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._value: T | None = None
        self._at = 0.0
        self._task: asyncio.Task[T] | None = None

    def forget(self) -> None:
        """After a change of ours (a launch, a delete): the next caller lists afresh."""
        self._value = None

    async def get(self) -> T:
        if self._value is not None and time.monotonic() - self._at < self._ttl_s:
            return self._value
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._refresh())
        return await self._task

    async def _refresh(self) -> T:
        value = await self._fetch()
        self._value, self._at = value, time.monotonic()
        return value
