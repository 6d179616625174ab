"""Azure Scheduled Events: Preempt/Terminate (reclaim) and host maintenance for this VM.

Polling starts when the watcher starts because the service only enables itself on the first
request (which may take minutes). Events for a placement group reach every VM in it, so only
those whose `Resources` name this VM are notices. `acknowledge()` approves the event
(`StartRequests`) so the platform need not wait for `NotBefore`.

Nothing from the endpoint is adopted unchecked: the VM name must be a name Azure allows (a
garbage 200 stored as the name would hide every later event for this VM), the incarnation an
integer, each event's id, type, resources and `NotBefore` well formed. A bad answer is retried
on the next poll; a document with a bad event is read again (its incarnation is not recorded),
so the event is heard once the service answers it properly.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from spotrun.notices.base import Notice, NoticeKind, utcnow
from spotrun.notices.http import (
    POLL_DEADLINE_S,
    BadResponse,
    OnceLog,
    PollingWatcher,
    describe,
    identifier,
    metadata_client,
    plausible,
    within,
)

DEFAULT_URL = "http://169.254.169.254"
API_VERSION = "2020-07-01"
INSTANCE_API_VERSION = "2021-02-01"
HEADERS = {"Metadata": "true"}
EVENTS_PATH = "/metadata/scheduledevents"
RECLAIM_TYPES = ("Preempt", "Terminate")
# Azure resource naming rules: a VM name is 1-64 letters, digits, '-', '_' and '.', not ending in
# '.' or '-'; a scale-set instance is `<scale set>_<n>` (as in the docs' "WestNO_0").
VM_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?$")


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
        if vm_name is not None and not VM_NAME.match(vm_name):
            raise ValueError(f"{vm_name!r:.60} is not an Azure VM name (letters, digits, '-', '_', '.')")
        self.vm_name = vm_name
        self._incarnation: int | None = None
        self._bad_events = OnceLog(self.log)

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
        if type(incarnation) is not int or incarnation < 0:
            raise BadResponse(f"DocumentIncarnation {incarnation!r:.40} is not a count")
        if incarnation == self._incarnation:
            return []  # nothing changed since the last answer
        found: list[tuple[Hashable, Notice]] = []
        complete = True
        for event in document["Events"]:
            try:
                notice = event_notice(event, name)
            except BadResponse as exc:  # one bad event must not hide the others
                self._bad_events.failed(f"azure: {exc}; reading the events again")
                complete = False
                continue
            if notice is not None:
                found.append((("event", notice.raw["EventId"]), notice))
        if complete:
            self._bad_events.ok()
            self._incarnation = incarnation
        return found

    async def _own_name(self) -> str:
        response = await self.client.get(
            "/metadata/instance/compute/name",
            params={"api-version": INSTANCE_API_VERSION, "format": "text"},
            headers=HEADERS,
        )
        if response.status_code != 200:
            raise BadResponse(f"cannot read this VM's name: HTTP {response.status_code}; pass vm_name")
        self.vm_name = name = valid_name(response.text.strip())
        self.log.info("azure: watching scheduled events for VM %r", name)
        return name

    async def acknowledge(self, notice: Notice) -> None:
        event_id = notice.raw.get("EventId") if isinstance(notice.raw, dict) else None
        if notice.provider != "azure" or not event_id:
            return
        try:
            response = await within(
                POLL_DEADLINE_S,
                self.client.post(
                    EVENTS_PATH,
                    params={"api-version": API_VERSION},
                    headers=HEADERS,
                    json={"StartRequests": [{"EventId": event_id}]},
                ),
                "approval",
            )
        except (httpx.HTTPError, BadResponse) as exc:
            self.log.warning("azure: could not approve event %s: %s", event_id, describe(exc))
            return
        if response.status_code != 200:
            self.log.warning("azure: approving event %s got HTTP %s", event_id, response.status_code)


def valid_name(name: str) -> str:
    if not VM_NAME.match(name):
        raise BadResponse(f"{name!r:.60} is not an Azure VM name; pass vm_name (--azure-vm-name)")
    return name


def event_notice(event: Any, vm_name: str) -> Notice | None:
    """The notice for one event, or None when it is not about this VM."""
    resources = event.get("Resources") if isinstance(event, dict) else None
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise BadResponse(f"malformed scheduled event {event!r:.80}")
    if vm_name not in resources:
        return None
    event_id = identifier(event.get("EventId"), "EventId")
    event_type = identifier(event.get("EventType"), "EventType")
    kind = NoticeKind.RECLAIM if event_type in RECLAIM_TYPES else NoticeKind.MAINTENANCE
    return Notice("azure", kind, event_type.lower(), not_before(event), raw=event)


def not_before(event: dict[str, Any]) -> datetime:
    """RFC1123 `NotBefore`; "" once the event has Started, which means now."""
    text = event.get("NotBefore")
    if event.get("EventStatus") == "Started" or text == "":
        return utcnow()
    try:
        when = parsedate_to_datetime(str(text))
    except (TypeError, ValueError):
        raise BadResponse(f"NotBefore {text!r:.60} is not an RFC1123 time") from None
    if when.tzinfo is None:
        raise BadResponse(f"NotBefore {text!r:.60} has no time zone")
    return plausible(when)


async def probe(client: httpx.AsyncClient) -> bool:
    """Azure IMDS answers the compute name to a `Metadata: true` request."""
    response = await client.get(
        "/metadata/instance/compute/name",
        params={"api-version": INSTANCE_API_VERSION, "format": "text"},
        headers=HEADERS,
    )
    return response.status_code == 200 and bool(response.text.strip())
