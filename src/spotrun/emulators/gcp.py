"""GCE metadata server as a Spot/preemptible VM sees it.

Faithful where watchers and google-auth look (reference/notices.md §2, from Google's "View and
query VM metadata" doc and its metadata emulator): 403 without `Metadata-Flavor: Google` (or
with `X-Forwarded-For`), `Metadata-Flavor: Google` and an `ETag` on every answer, hanging GETs
(`?wait_for_change=true`: returns at once when `last_etag` differs from the current ETag,
otherwise when the value changes, or unchanged after `timeout_sec`, which must be an integer:
400 otherwise; a directory wait needs `recursive=true`: 400 otherwise), `?recursive=true` and
`?alt=json`, `instance/preempted` FALSE -> TRUE and `instance/maintenance-event`
NONE -> TERMINATE_ON_HOST_MAINTENANCE | MIGRATE_ON_HOST_MAINTENANCE. 503 blips come from the
shared `POST /_spotrun/fail {"status": 503, "count": N}`.

Instance facts come from the profile: `instance/id`, `name`, `zone`, `machine-type`, and the
`scheduling/` folder (`preemptible`, `provisioning-model`, `on-host-maintenance` TERMINATE for
Spot, which GCP's k8s-node-termination-handler checks at start-up, `automatic-restart`). The
default service account answers `service-accounts/default/?recursive=true` and `.../token`, as
google-auth's `compute_engine.Credentials.refresh` reads them.

`preempted` turns TRUE when the ACPI soft-off is sent (notice duration 0, the default), or
`lead_s` before it (`scheduling.preemptionNoticeDuration`); the VM is hard-off 30 s after the
soft-off. `GET /_spotrun/state` shows both times.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from datetime import timedelta
from typing import Any

from aiohttp import web

from spotrun.emulators.base import ControlError, Emulator
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import utcnow

MAINTENANCE_VALUES = ("TERMINATE_ON_HOST_MAINTENANCE", "MIGRATE_ON_HOST_MAINTENANCE")
SHUTDOWN_GRACE_S = 30.0  # best-effort time from ACPI soft-off to hard off
PROJECT_NUMBER = "000000000000"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
TOKEN_TTL_S = 3599


def etag(value: str) -> str:
    return hashlib.sha1(value.encode()).hexdigest()[:16]


class GcpEmulator(Emulator):
    cloud = "gcp"
    title = "GCP"
    DEFAULTS = {"id": "1234567890123456789", "type": "g2-standard-8", "zone": "us-central1-a", "name": "spotrun-vm"}

    def __init__(self, *, project_id: str = "spotrun-emulator", profile: InstanceProfile | None = None) -> None:
        super().__init__(profile)
        p = self.profile
        email = f"{PROJECT_NUMBER}-compute@developer.gserviceaccount.com"
        self.values: dict[str, str | list[str]] = {
            "instance/id": str(p.id),
            "instance/name": str(p.name),
            "instance/hostname": f"{p.name}.{p.zone}.c.{project_id}.internal",
            "instance/zone": f"projects/{PROJECT_NUMBER}/zones/{p.zone}",
            "instance/machine-type": f"projects/{PROJECT_NUMBER}/machineTypes/{p.type}",
            # Spot VMs cannot live-migrate: on-host-maintenance is TERMINATE, no automatic restart
            "instance/scheduling/automatic-restart": "FALSE" if p.spot else "TRUE",
            "instance/scheduling/on-host-maintenance": "TERMINATE" if p.spot else "MIGRATE",
            "instance/scheduling/preemptible": "TRUE" if p.spot else "FALSE",
            "instance/scheduling/provisioning-model": "SPOT" if p.spot else "STANDARD",
            "instance/preempted": "FALSE",
            "instance/maintenance-event": "NONE",
            "project/project-id": project_id,
            "project/numeric-project-id": PROJECT_NUMBER,
        }
        for account in ("default", email):
            base = f"instance/service-accounts/{account}"
            self.values |= {f"{base}/aliases": ["default"], f"{base}/email": email, f"{base}/scopes": SCOPES}
        self.soft_off_at: str | None = None
        self.hard_off_at: str | None = None
        self._changed = asyncio.Event()

    # --- notices ----------------------------------------------------------------------------

    def trigger(
        self, kind: str = "reclaim", action: str | None = None, lead_s: float | None = None
    ) -> dict[str, Any]:
        self.check_kind(kind, ("reclaim", "maintenance"))
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
        account, _, leaf = path.removeprefix("instance/service-accounts/").partition("/")
        if path.startswith("instance/service-accounts/") and leaf == "token":
            return self._token(account)
        if query.get("wait_for_change", "").lower() == "true":
            refused = self._refuse_wait(path, recursive, query.get("timeout_sec"))
            if refused:
                return refused
            await self._wait_for_change(path, recursive, query)
        body = self._render(path, recursive)
        if body is None:
            return _not_found()
        return self._answer(body, json_body=recursive or query.get("alt") == "json")

    def _refuse_wait(self, path: str, recursive: bool, timeout_sec: str | None) -> web.Response | None:
        """A hanging GET the real server refuses at once rather than holding open."""
        if timeout_sec is not None and not (timeout_sec.isdigit() and int(timeout_sec) > 0):
            return _bad_request(f"timeout_sec must be a positive integer, not {timeout_sec[:20]!r}")
        if not recursive and self._is_directory(path):
            return _bad_request("wait_for_change on a directory needs recursive=true")
        return None

    def _is_directory(self, path: str) -> bool:
        prefix = f"{path}/" if path else ""
        return path not in self.values and any(k.startswith(prefix) for k in self.values)

    def _token(self, account: str) -> web.Response:
        """An OAuth access token for the VM's service account, as google-auth expects it."""
        if f"instance/service-accounts/{account}/email" not in self.values:
            return _not_found()
        token = {"access_token": f"ya29.spotrun-emulator-{secrets.token_urlsafe(24)}",
                 "expires_in": TOKEN_TTL_S, "token_type": "Bearer"}
        return _respond(web.json_response(token))

    async def _wait_for_change(self, path: str, recursive: bool, query: Any) -> None:
        timeout = float(query["timeout_sec"]) if "timeout_sec" in query else None
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
            value = self.values[path]
            return value if isinstance(value, str) else "\n".join(value) + "\n"
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
    """Recursive answers use camelCase keys (`machine-type` -> `machineType`), not for accounts."""
    if "@" in name:
        return name
    head, *rest = name.split("-")
    return head + "".join(part.title() for part in rest)


def _not_found() -> web.Response:
    return _respond(web.Response(status=404, text="Not Found\n", content_type="text/html"))


def _bad_request(reason: str) -> web.Response:
    return _respond(web.Response(status=400, text=f"Bad Request: {reason}\n", content_type="text/html"))


def _respond(response: web.Response) -> web.Response:
    response.headers["Metadata-Flavor"] = "Google"
    response.headers["Server"] = "Metadata Server for VM"
    return response
