"""GCE metadata server: preemption and host maintenance, heard through hanging GETs.

One long poll per item (`?wait_for_change=true&last_etag=...`) returns the moment the value
changes, so a notice arrives in milliseconds with no polling cost while nothing happens.
`preempted` turning TRUE means the ACPI soft-off is being sent (or, with a notice duration,
will be in that many seconds); the VM is hard-off about 30 s later, hence the default deadline.
Each hanging GET has an overall deadline (`timeout_sec` plus slack): httpx's timeout is per
read, and a server trickling bytes must not hold the watch forever. An ETag that is not a short
token is refused rather than sent back as `last_etag`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx

from spotrun.notices.base import Notice, NoticeKind, Watcher, utcnow
from spotrun.notices.http import Backoff, BadResponse, OnceLog, describe, metadata_client, within

DEFAULT_URL = "http://169.254.169.254"  # metadata.google.internal, without a DNS lookup
HEADERS = {"Metadata-Flavor": "Google"}
PREEMPTED = "instance/preempted"
MAINTENANCE = "instance/maintenance-event"
MAINTENANCE_VALUES = ("TERMINATE_ON_HOST_MAINTENANCE", "MIGRATE_ON_HOST_MAINTENANCE")
HANG_S = 60  # timeout_sec of each hanging GET; the server answers unchanged after it
SAME_ETAG_PAUSE_S = 0.1  # guards against a server that ignores wait_for_change
HANG_SLACK_S = 5.0  # beyond timeout_sec, before a hanging GET counts as hung
ETAG = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # GCE's are 16 hex digits


class GcpWatcher(Watcher):
    """`deadline_s`: from `preempted` TRUE to hard off; 30 s by default, 150 s on a VM with a
    120 s `preemptionNoticeDuration`. `hang_s`: how long each hanging GET may wait."""

    provider = "gcp"

    def __init__(
        self, metadata_url: str | None = None, *, deadline_s: float = 30.0, hang_s: int = HANG_S
    ) -> None:
        self.deadline_s = deadline_s
        self.hang_s = hang_s
        # A server that keeps a hanging GET past timeout_sec (plus slack) is itself hung.
        self.client = metadata_client(
            metadata_url or DEFAULT_URL, timeout=httpx.Timeout(hang_s + HANG_SLACK_S, connect=0.5)
        )
        self.log = logging.getLogger("spotrun.notices.gcp")

    async def watch(self) -> AsyncIterator[Notice]:
        queue: asyncio.Queue[Notice] = asyncio.Queue()
        tasks = [asyncio.create_task(self._follow(path, queue)) for path in (PREEMPTED, MAINTENANCE)]
        try:
            while True:
                yield await queue.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, path: str, queue: asyncio.Queue[Notice]) -> None:
        """Follow one item forever; queue a notice each time it turns into one."""
        tag, active = "0", False
        backoff, errors = Backoff(0.1), OnceLog(self.log)
        while True:
            try:
                value, new_tag = await within(self.hang_s + HANG_SLACK_S, self._hanging_get(path, tag), path)
                notice = self._notice(path, value)
            except Exception as exc:  # noqa: BLE001  (keep watching whatever the server does)
                errors.failed(f"gcp {path}: {describe(exc)}")
                await asyncio.sleep(backoff.next())
                continue
            errors.ok()
            backoff.reset()
            if new_tag == tag:
                await asyncio.sleep(SAME_ETAG_PAUSE_S)
            tag = new_tag
            if notice is None:
                active = False
            elif not active:
                active = True
                self.log.info("notice: %s %s", notice.kind.value, notice.action)
                await queue.put(notice)

    async def _hanging_get(self, path: str, tag: str) -> tuple[str, str]:
        response = await self.client.get(
            f"/computeMetadata/v1/{path}",
            params={"wait_for_change": "true", "last_etag": tag, "timeout_sec": str(self.hang_s)},
            headers=HEADERS,
        )
        if response.status_code != 200:
            raise BadResponse(f"HTTP {response.status_code}")
        new_tag = response.headers.get("etag", "")
        if not ETAG.match(new_tag):
            raise BadResponse(f"answer without a usable ETag ({new_tag[:40]!r})")
        return response.text.strip(), new_tag

    def _notice(self, path: str, value: str) -> Notice | None:
        """The notice a value means; None for FALSE/NONE; BadResponse for anything else."""
        if path == PREEMPTED and value == "TRUE":
            deadline = utcnow() + timedelta(seconds=self.deadline_s)
            return Notice("gcp", NoticeKind.RECLAIM, "preempt", deadline, raw={"preempted": value})
        if path == MAINTENANCE and value in MAINTENANCE_VALUES:
            return Notice("gcp", NoticeKind.MAINTENANCE, value.lower(), None, raw={"maintenance-event": value})
        if value in ("FALSE", "NONE"):
            return None
        raise BadResponse(f"unexpected value {value[:60]!r}")

    async def aclose(self) -> None:
        await self.client.aclose()


async def probe(client: httpx.AsyncClient) -> bool:
    """A GCE metadata server answers with `Metadata-Flavor: Google`."""
    response = await client.get("/computeMetadata/v1/instance/id", headers=HEADERS)
    return response.status_code == 200 and response.headers.get("metadata-flavor") == "Google"
