"""Azure Scheduled Events: Preempt/Terminate (reclaim) and host maintenance for this VM.

Polling starts when the watcher starts because the service only enables itself on the first
request (which may take minutes). Events for a placement group reach every VM in it, so only
those whose `Resources` name this VM are notices. `acknowledge()` approves the event
(`StartRequests`) so the platform need not wait for `NotBefore`.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from spotrun.notices.base import Notice, NoticeKind, utcnow
from spotrun.notices.http import BadResponse, PollingWatcher, describe, metadata_client

DEFAULT_URL = "http://169.254.169.254"
API_VERSION = "2020-07-01"
INSTANCE_API_VERSION = "2021-02-01"
HEADERS = {"Metadata": "true"}
EVENTS_PATH = "/metadata/scheduledevents"
RECLAIM_TYPES = ("Preempt", "Terminate")


class AzureWatcher(PollingWatcher):
    provider = "azure"

    def __init__(
        self,
        metadata_url: str | None = None,
        *,
        vm_name: str | None = None,
        poll_interval: float | None = None,
    ) -> None:
        super().__init__(metadata_client(metadata_url or DEFAULT_URL), poll_interval)
        self.vm_name = vm_name
        self._incarnation: Any = None

    async def poll(self) -> list[tuple[Hashable, Notice]]:
        name = self.vm_name or await self._own_name()
        response = await self.client.get(EVENTS_PATH, params={"api-version": API_VERSION}, headers=HEADERS)
        if response.status_code != 200:  # 410, 429 and 500 are retried by the polling loop
            raise BadResponse(f"scheduled events: HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise BadResponse(f"scheduled events are not JSON: {response.text[:60]!r}") from None
        if not isinstance(document, dict) or not isinstance(document.get("Events"), list):
            raise BadResponse(f"scheduled events without an Events list: {response.text[:80]!r}")
        incarnation = document.get("DocumentIncarnation")
        if incarnation is not None and incarnation == self._incarnation:
            return []  # nothing changed since the last answer
        found: list[tuple[Hashable, Notice]] = []
        for event in document["Events"]:
            try:
                notice = event_notice(event, name)
            except BadResponse as exc:  # one bad event must not hide the others
                self.log.warning("azure: %s; ignored", exc)
                continue
            if notice is not None:
                found.append((("event", notice.raw["EventId"]), notice))
        self._incarnation = incarnation
        return found

    async def _own_name(self) -> str:
        response = await self.client.get(
            "/metadata/instance/compute/name",
            params={"api-version": INSTANCE_API_VERSION, "format": "text"},
            headers=HEADERS,
        )
        name = response.text.strip()
        if response.status_code != 200 or not name:
            raise BadResponse(f"cannot read this VM's name: HTTP {response.status_code}; pass vm_name")
        self.vm_name = name
        self.log.info("azure: watching scheduled events for VM %r", name)
        return name

    async def acknowledge(self, notice: Notice) -> None:
        event_id = notice.raw.get("EventId") if isinstance(notice.raw, dict) else None
        if notice.provider != "azure" or not event_id:
            return
        try:
            response = await self.client.post(
                EVENTS_PATH,
                params={"api-version": API_VERSION},
                headers=HEADERS,
                json={"StartRequests": [{"EventId": event_id}]},
            )
        except httpx.HTTPError as exc:
            self.log.warning("azure: could not approve event %s: %s", event_id, describe(exc))
            return
        if response.status_code != 200:
            self.log.warning("azure: approving event %s got HTTP %s", event_id, response.status_code)


def event_notice(event: Any, vm_name: str) -> Notice | None:
    """The notice for one event, or None when it is not about this VM."""
    if not isinstance(event, dict) or not isinstance(event.get("Resources"), list):
        raise BadResponse(f"malformed scheduled event {event!r:.80}")
    if vm_name not in event["Resources"]:
        return None
    event_type, event_id = event.get("EventType"), event.get("EventId")
    if not isinstance(event_type, str) or not isinstance(event_id, str):
        raise BadResponse(f"scheduled event without EventType/EventId {event!r:.80}")
    kind = NoticeKind.RECLAIM if event_type in RECLAIM_TYPES else NoticeKind.MAINTENANCE
    return Notice("azure", kind, event_type.lower(), not_before(event), raw=event)


def not_before(event: dict[str, Any]) -> datetime | None:
    """RFC1123 `NotBefore`; "" once the event has Started, which means now."""
    text = event.get("NotBefore")
    if event.get("EventStatus") == "Started" or text == "":
        return utcnow()
    try:
        return parsedate_to_datetime(str(text))
    except (TypeError, ValueError):
        return None


async def probe(client: httpx.AsyncClient) -> bool:
    """Azure IMDS answers the compute name to a `Metadata: true` request."""
    response = await client.get(
        "/metadata/instance/compute/name",
        params={"api-version": INSTANCE_API_VERSION, "format": "text"},
        headers=HEADERS,
    )
    return response.status_code == 200 and bool(response.text.strip())
