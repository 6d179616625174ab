"""Alibaba Elastic Container Instance (ECI) guest agent, served on a Unix socket.

Inside an ECI pod the guest agent answers HTTP on `/run/eci-guest-agent.sock`:
`GET /vm/metadata?key=spot_termination_time` is 404 while the pod is safe and a UTC
`2015-01-05T18:02:00Z` once its spot capacity is to be released. Other keys: `instance_id`.
Start it with `await EciEmulator().start(socket_path=...)`; the URL is `unix://<path>`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from spotrun.emulators.alibaba import release_time
from spotrun.emulators.base import Emulator, check_kind

DEFAULT_SOCKET = "/run/eci-guest-agent.sock"


class EciEmulator(Emulator):
    cloud = "eci"

    def __init__(self, *, instance_id: str = "eci-spotrunemulator") -> None:
        super().__init__()
        self.instance_id = instance_id
        self.termination_time: str | None = None

    def trigger(
        self, kind: str = "reclaim", action: str | None = None, lead_s: float | None = None
    ) -> dict[str, Any]:
        check_kind(kind, ("reclaim",), "ECI")
        self.termination_time = release_time(action, lead_s)
        return {"spot_termination_time": self.termination_time}

    def clear(self) -> None:
        self.termination_time = None

    def state(self) -> dict[str, Any]:
        return {"cloud": self.cloud, "spot_termination_time": self.termination_time}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/vm/metadata", self._metadata)]

    async def _metadata(self, request: web.Request) -> web.Response:
        values = {"instance_id": self.instance_id, "spot_termination_time": self.termination_time}
        value = values.get(request.query.get("key", ""))
        if value is None:
            return web.Response(status=404, text="not found\n")
        return web.Response(text=value, content_type="text/plain")
