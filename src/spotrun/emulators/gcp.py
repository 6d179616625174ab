"""GCE metadata server as a Spot/preemptible VM sees it.

Faithful where watchers and google-auth look: 403 without `Metadata-Flavor: Google` (or with
`X-Forwarded-For`), `Metadata-Flavor: Google` and an `ETag` on every answer, hanging GETs
(`?wait_for_change=true`: returns at once when `last_etag` differs from the current ETag,
otherwise when the value changes, or unchanged after `timeout_sec`), `?recursive=true` and
`?alt=json`, `instance/preempted` FALSE -> TRUE and `instance/maintenance-event`
NONE -> TERMINATE_ON_HOST_MAINTENANCE | MIGRATE_ON_HOST_MAINTENANCE. 503 blips come from the
shared `POST /_spotrun/fail {"status": 503, "count": N}`.

`preempted` turns TRUE when the ACPI soft-off is sent (notice duration 0, the default), or
`lead_s` before it (`scheduling.preemptionNoticeDuration`); the VM is hard-off 30 s after the
soft-off. `GET /_spotrun/state` shows both times.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from typing import Any

from aiohttp import web

from spotrun.emulators.base import ControlError, Emulator, check_kind
from spotrun.notices.base import utcnow

MAINTENANCE_VALUES = ("TERMINATE_ON_HOST_MAINTENANCE", "MIGRATE_ON_HOST_MAINTENANCE")
SHUTDOWN_GRACE_S = 30.0  # best-effort time from ACPI soft-off to hard off


def etag(value: str) -> str:
    return hashlib.sha1(value.encode()).hexdigest()[:16]


class GcpEmulator(Emulator):
    cloud = "gcp"

    def __init__(
        self,
        *,
        project_id: str = "spotrun-emulator",
        instance_name: str = "spotrun-vm",
        zone: str = "us-central1-a",
    ) -> None:
        super().__init__()
        self.values: dict[str, str] = {
            "instance/id": "1234567890123456789",
            "instance/name": instance_name,
            "instance/hostname": f"{instance_name}.{zone}.c.{project_id}.internal",
            "instance/zone": f"projects/000000000000/zones/{zone}",
            "instance/machine-type": "projects/000000000000/machineTypes/g2-standard-8",
            "instance/scheduling/preemptible": "TRUE",
            "instance/scheduling/provisioning-model": "SPOT",
            "instance/preempted": "FALSE",
            "instance/maintenance-event": "NONE",
            "project/project-id": project_id,
            "project/numeric-project-id": "000000000000",
        }
        self.soft_off_at: str | None = None
        self.hard_off_at: str | None = None
        self._changed = asyncio.Event()

    # --- notices ----------------------------------------------------------------------------

    def trigger(
        self, kind: str = "reclaim", action: str | None = None, lead_s: float | None = None
    ) -> dict[str, Any]:
        check_kind(kind, ("reclaim", "maintenance"), "GCP")
        if kind == "maintenance":
            value = (action or MAINTENANCE_VALUES[0]).upper()
            if value not in MAINTENANCE_VALUES:
                raise ControlError(f"unknown maintenance event {value!r}; use one of {MAINTENANCE_VALUES}")
            self._set("instance/maintenance-event", value)
            return {"maintenance-event": value}
        if action not in (None, "preempt"):
            raise ControlError(f"GCP only preempts; drop --action or use 'preempt', not {action!r}")
        soft_off = utcnow() + timedelta(seconds=lead_s or 0.0)
        self.soft_off_at = soft_off.isoformat()
        self.hard_off_at = (soft_off + timedelta(seconds=SHUTDOWN_GRACE_S)).isoformat()
        self._set("instance/preempted", "TRUE")
        return {"preempted": "TRUE", "soft_off_at": self.soft_off_at, "hard_off_at": self.hard_off_at}

    def clear(self) -> None:
        self.soft_off_at = self.hard_off_at = None
        self._set("instance/preempted", "FALSE")
        self._set("instance/maintenance-event", "NONE")

    def state(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "preempted": self.values["instance/preempted"],
            "maintenance-event": self.values["instance/maintenance-event"],
            "soft_off_at": self.soft_off_at,
            "hard_off_at": self.hard_off_at,
        }

    def _set(self, path: str, value: str) -> None:
        if self.values.get(path) != value:
            self.values[path] = value
            self._changed.set()  # wake every hanging GET; each re-checks its own path
            self._changed = asyncio.Event()

    def on_stop(self) -> None:
        self._changed.set()

    # --- HTTP -------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._root),
            web.get("/computeMetadata/v1", self._metadata),
            web.get("/computeMetadata/v1/{path:.*}", self._metadata),
        ]

    async def _root(self, request: web.Request) -> web.Response:
        return self._answer("computeMetadata/", json_body=False)

    async def _metadata(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google" or "X-Forwarded-For" in request.headers:
            return _respond(
                web.Response(
                    status=403,
                    text="Your client does not have permission to get URL "
                    f"{request.path} from this server. Missing Metadata-Flavor:Google header.\n",
                    content_type="text/html",
                )
            )
        path = request.match_info.get("path", "").strip("/")
        query = request.query
        recursive = query.get("recursive", "").lower() == "true"
        if query.get("wait_for_change", "").lower() == "true":
            await self._wait_for_change(path, recursive, query)
        body = self._render(path, recursive)
        if body is None:
            return _respond(web.Response(status=404, text="Not Found\n", content_type="text/html"))
        return self._answer(body, json_body=recursive or query.get("alt") == "json")

    async def _wait_for_change(self, path: str, recursive: bool, query: Any) -> None:
        try:
            timeout = float(query["timeout_sec"]) if "timeout_sec" in query else None
        except ValueError:
            timeout = None
        last = query.get("last_etag")
        start = etag(self._render(path, recursive) or "")
        if last is not None and last != start:
            return  # the caller has an old value: answer now
        deadline = asyncio.get_running_loop().time() + timeout if timeout is not None else None
        while etag(self._render(path, recursive) or "") == start and not self._stopping.is_set():
            left = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if left is not None and left <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return

    def _render(self, path: str, recursive: bool) -> str | None:
        if path in self.values:
            return self.values[path]
        prefix = f"{path}/" if path else ""
        below = {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}
        if not below:
            return None
        if recursive:
            tree: dict[str, Any] = {}
            for key, value in below.items():
                *folders, leaf = key.split("/")
                node = tree
                for folder in folders:
                    node = node.setdefault(_camel(folder), {})
                node[_camel(leaf)] = value
            return json.dumps(tree)
        children = sorted({k.split("/", 1)[0] + ("/" if "/" in k else "") for k in below})
        return "\n".join(children) + "\n"

    @staticmethod
    def _answer(value: str, *, json_body: bool) -> web.Response:
        # The ETag is the value's, whatever the encoding, so `last_etag` works with `alt=json`.
        text = json.dumps(value) if json_body and not value.startswith("{") else value
        response = web.Response(
            text=text, content_type="application/json" if json_body else "application/text"
        )
        response.headers["ETag"] = etag(value)
        return _respond(response)


def _camel(name: str) -> str:
    """Recursive answers use camelCase keys (`machine-type` -> `machineType`)."""
    head, *rest = name.split("-")
    return head + "".join(part.title() for part in rest)


def _respond(response: web.Response) -> web.Response:
    response.headers["Metadata-Flavor"] = "Google"
    response.headers["Server"] = "Metadata Server for VM"
    return response
