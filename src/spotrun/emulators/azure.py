"""Azure IMDS Scheduled Events as a Spot VM sees it.

Faithful where watchers look: 400 without `Metadata: true`, with `X-Forwarded-For`, with a
duplicated query parameter or a missing/unknown `api-version` (JSON error listing the newest
versions); 429 above 5 requests a second; `DocumentIncarnation` bumped whenever `Events`
changes; RFC1123 `NotBefore` (at least 30 s ahead for `Preempt`) that becomes "" once the event
is `Started` (its time has come, or it was approved); events for other VMs in the same
placement group (`resources`); `POST` `{"StartRequests":[{"EventId": ...}]}` answered 200, or
400 for a bad header, body or unknown EventId. Also `/metadata/instance/compute/...` from the
instance profile (name, vmSize, vmId, location/zone, priority Spot|Regular).

Each `api-version` gets the document of its time (reference/notices.md §3.1, from Microsoft's
scheduled-events.md version table): `Preempt` exists from 2017-11-01 and `Terminate` from
2019-01-01, so older versions never show them; `Description` appears in 2019-04-01,
`EventSource` in 2019-08-01, `DurationInSeconds` in 2020-07-01.

The service enables itself on the first call, which "may take up to 2 minutes", and disables
itself after 24 h without requests: with `first_call_delay_s` (`--first-call-delay`) every
request in that window waits until the service is enabled, not only the first one.

Control operations beyond the shared ones (see `spotrun.emulators.base`):
    POST /_spotrun/trigger {"kind": ..., "action": "Preempt", "lead_s": 30,
                            "resources": ["other-vm"]}   an event for other VMs only
    POST /_spotrun/cancel {"event_id": "..."}           the event disappears (canceled)
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from spotrun.emulators.base import ControlError, Emulator
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import utcnow

API_VERSIONS = (
    "2017-03-01",
    "2017-08-01",
    "2017-11-01",
    "2019-01-01",
    "2019-04-01",
    "2019-08-01",
    "2020-07-01",
)
INSTANCE_API_VERSIONS = ("2019-06-01", "2020-09-01", "2021-02-01", "2021-12-13", "2023-07-01")
RECLAIM_TYPES = ("Preempt", "Terminate")
MAINTENANCE_TYPES = ("Freeze", "Reboot", "Redeploy")
# Minimum notice per event type, from Microsoft's documentation.
MIN_LEAD_S = {"Preempt": 30, "Terminate": 300, "Freeze": 900, "Reboot": 900, "Redeploy": 600}
RATE_LIMIT_PER_S = 5
IDLE_DISABLE_S = 24 * 3600  # the service turns itself off after a day without requests
# api-version from which each event type, and each optional event field, is served
TYPE_SINCE = {"Preempt": "2017-11-01", "Terminate": "2019-01-01"}
FIELD_SINCE = {"Description": "2019-04-01", "EventSource": "2019-08-01", "DurationInSeconds": "2020-07-01"}


def rfc1123(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


def served(event: dict[str, Any], api_version: str) -> dict[str, Any] | None:
    """The event as `api_version` shows it, or None when that version predates its type."""
    if api_version < TYPE_SINCE.get(event["EventType"], API_VERSIONS[0]):
        return None
    return {k: v for k, v in event.items() if api_version >= FIELD_SINCE.get(k, API_VERSIONS[0])}


class AzureEmulator(Emulator):
    cloud = "azure"
    title = "Azure"
    DEFAULTS = {
        "id": "00000000-0000-4000-8000-5907e0000000",  # vmId
        "type": "Standard_NC6s_v3",  # vmSize
        "zone": "westeurope-1",  # location-zone; a bare location means no availability zone
        "name": "spotrun-vm",
    }

    def __init__(
        self,
        *,
        profile: InstanceProfile | None = None,
        first_call_delay_s: float = 0.0,
        rate_limit: bool = True,
    ) -> None:
        super().__init__(profile)
        self.incarnation = 1
        self.events: list[dict[str, Any]] = []
        self._not_before: dict[str, datetime] = {}
        self._approved: set[str] = set()
        self._enable_s = first_call_delay_s
        self._enabled_at: float | None = None
        self._last_call = 0.0
        self._rate_limit = rate_limit
        self._recent: deque[float] = deque()

    @property
    def vm_name(self) -> str:
        return str(self.profile.name)

    # --- notices ----------------------------------------------------------------------------

    def trigger(
        self,
        kind: str = "reclaim",
        action: str | None = None,
        lead_s: float | None = None,
        resources: list[str] | None = None,
    ) -> dict[str, Any]:
        self.check_kind(kind, ("reclaim", "maintenance"))
        allowed = RECLAIM_TYPES if kind == "reclaim" else MAINTENANCE_TYPES
        event_type = (action or allowed[0]).title()
        if event_type not in allowed:
            raise ControlError(f"a {kind} event on Azure is one of {allowed}, not {action!r}")
        lead = max(lead_s if lead_s is not None else 0.0, MIN_LEAD_S[event_type])
        event_id = str(uuid.uuid4()).upper()
        not_before = utcnow() + timedelta(seconds=lead)
        event = {
            "EventId": event_id,
            "EventStatus": "Scheduled",
            "EventType": event_type,
            "ResourceType": "VirtualMachine",
            "Resources": list(resources) if resources else [self.vm_name],
            "NotBefore": rfc1123(not_before),
            "Description": _DESCRIPTIONS[event_type],
            "EventSource": "User" if event_type == "Terminate" else "Platform",
            "DurationInSeconds": 5 if event_type == "Freeze" else -1,
        }
        self._not_before[event_id] = not_before
        self.events.append(event)
        self.incarnation += 1
        return event

    def cancel(self, event_id: str) -> dict[str, Any]:
        before = len(self.events)
        self.events = [e for e in self.events if e["EventId"] != event_id]
        if len(self.events) == before:
            raise ControlError(f"no event {event_id!r}; GET /_spotrun/state lists them")
        self.incarnation += 1
        return {"canceled": event_id}

    def clear(self) -> None:
        if self.events:
            self.events = []
            self.incarnation += 1

    def state(self) -> dict[str, Any]:
        self._advance()
        return {
            "cloud": self.cloud,
            "vm_name": self.vm_name,
            "DocumentIncarnation": self.incarnation,
            "Events": self.events,
            "approved": sorted(self._approved),
        }

    def control_ops(self) -> dict[str, Any]:
        return {"cancel": self.cancel}

    def _advance(self) -> None:
        """Scheduled events whose time came, or that were approved, are Started."""
        now = utcnow()
        for event in self.events:
            event_id = event["EventId"]
            due = self._not_before[event_id] <= now or event_id in self._approved
            if event["EventStatus"] == "Scheduled" and due:
                event["EventStatus"] = "Started"
                event["NotBefore"] = ""
                self.incarnation += 1

    # --- HTTP -------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/metadata/scheduledevents", self._get_events),
            web.post("/metadata/scheduledevents", self._post_events),
            web.get("/metadata/instance", self._instance),
            web.get("/metadata/instance/compute/{field}", self._instance),
        ]

    def _reject(self, request: web.Request, versions: tuple[str, ...]) -> web.Response | None:
        """The checks every IMDS request goes through, in the order the service applies them."""
        if request.headers.get("Metadata", "").lower() != "true" or "X-Forwarded-For" in request.headers:
            return web.json_response(
                {"error": "Bad request. Required metadata header not specified"}, status=400
            )
        if len(request.query) != len(set(request.query.keys())):
            return web.json_response({"error": "Bad request. Duplicate query parameters"}, status=400)
        if request.query.get("api-version") not in versions:
            return web.json_response(
                {
                    "error": "Bad request. api-version is invalid or was not specified in the "
                    "request. For more information refer to aka.ms/azureimds",
                    "newest-versions": list(reversed(versions[-3:])),
                },
                status=400,
            )
        if self._rate_limit and self._over_limit():
            return web.json_response({"error": "Too many requests"}, status=429)
        return None

    def _over_limit(self) -> bool:
        now = time.monotonic()
        while self._recent and now - self._recent[0] > 1.0:
            self._recent.popleft()
        self._recent.append(now)
        return len(self._recent) > RATE_LIMIT_PER_S

    async def _enabled(self) -> None:
        """Hold a request while the service is still enabling itself (since the first call)."""
        now = time.monotonic()
        if now - self._last_call > IDLE_DISABLE_S:
            self._enabled_at = None
        self._last_call = now
        if self._enabled_at is None:
            self._enabled_at = now + self._enable_s
        if self._enabled_at > now:
            await self.wait_stopping(self._enabled_at - now)

    async def _get_events(self, request: web.Request) -> web.Response:
        await self._enabled()
        rejected = self._reject(request, API_VERSIONS)
        if rejected:
            return rejected
        self._advance()
        version = request.query["api-version"]
        events = [e for e in (served(event, version) for event in self.events) if e is not None]
        return web.json_response({"DocumentIncarnation": self.incarnation, "Events": events})

    async def _post_events(self, request: web.Request) -> web.Response:
        await self._enabled()
        rejected = self._reject(request, API_VERSIONS)
        if rejected:
            return rejected
        try:
            body = await request.json()
            ids = [item["EventId"] for item in body["StartRequests"]]
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"error": 'Bad request. Expected {"StartRequests":[{"EventId":"<id>"}]}'}, status=400
            )
        known = {e["EventId"] for e in self.events}
        if not ids or any(i not in known for i in ids):
            return web.json_response({"error": "Bad request. Unknown EventId"}, status=400)
        self._approved.update(ids)
        return web.Response(status=200)

    async def _instance(self, request: web.Request) -> web.Response:
        rejected = self._reject(request, INSTANCE_API_VERSIONS)
        if rejected:
            return rejected
        location, _, zone = str(self.profile.zone).partition("-")
        compute = {
            "name": self.vm_name,
            "location": location,
            "zone": zone,
            "priority": "Spot" if self.profile.spot else "Regular",
            "evictionPolicy": "Delete" if self.profile.spot else "",
            "vmId": str(self.profile.id),
            "vmSize": str(self.profile.type),
        }
        field = request.match_info.get("field")
        if field is None:
            return web.json_response({"compute": compute})
        if field not in compute:
            return web.json_response({"error": "Not found"}, status=404)
        if request.query.get("format") == "text":
            return web.Response(text=compute[field], content_type="text/plain")
        return web.json_response(compute[field])


_DESCRIPTIONS = {
    "Preempt": "The Spot Virtual Machine is being deleted (ephemeral disks are lost).",
    "Terminate": "The virtual machine is scheduled to be deleted.",
    "Freeze": "The virtual machine is scheduled to pause for a few seconds.",
    "Reboot": "The virtual machine is scheduled for reboot.",
    "Redeploy": "The virtual machine is scheduled to move to another node.",
}
