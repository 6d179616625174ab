"""Elice Cloud Infrastructure (ECI) guest agent, served on a Unix socket.

A spot VM on ECI asks its guest agent over `/run/eci-guest-agent.sock`:
`curl --unix-socket /run/eci-guest-agent.sock http://localhost/vm/metadata?key=spot_termination_time`
answers `404 page not found` while no reclaim is scheduled and the termination time, e.g.
`2026-04-08T05:00:00+00:00`, once it is; the VM is force-reclaimed after a 1-2 minute grace.
Source: the vendor's "Operating spot VMs" guide (elice.io/help/en/docs/eci/compute/spot-vm).
The 404 is Go's `http.NotFound` (`text/plain; charset=utf-8`, `X-Content-Type-Options: nosniff`).
Other keys: `instance_id` (the profile's id). Start with `await EciEmulator().start(socket_path=...)`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from spotrun.emulators.base import ControlError, Emulator
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import utcnow

DEFAULT_SOCKET = "/run/eci-guest-agent.sock"
DEFAULT_LEAD_S = 60.0  # the short end of the documented 1-2 minute grace


class EciEmulator(Emulator):
    cloud = "eci"
    title = "ECI"
    DEFAULTS = {"id": "eci-0123456789abcdef"}

    def __init__(self, *, profile: InstanceProfile | None = None) -> None:
        super().__init__(profile)
        self.termination_time: str | None = None

    def trigger(
        self, kind: str = "reclaim", action: str | None = None, lead_s: float | None = None
    ) -> dict[str, Any]:
        self.check_kind(kind, ("reclaim",))
        if action not in (None, "delete"):
            raise ControlError(f"ECI only reclaims; drop --action, not {action!r}")
        when = utcnow() + timedelta(seconds=DEFAULT_LEAD_S if lead_s is None else lead_s)
        self.termination_time = when.replace(microsecond=0).isoformat()  # `+00:00`, as documented
        return {"spot_termination_time": self.termination_time}

    def clear(self) -> None:
        self.termination_time = None

    def state(self) -> dict[str, Any]:
        return {"cloud": self.cloud, "spot_termination_time": self.termination_time}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/vm/metadata", self._metadata), web.route("*", "/{path:.*}", _not_found)]

    async def _metadata(self, request: web.Request) -> web.Response:
        values = {"instance_id": self.profile.id, "spot_termination_time": self.termination_time}
        value = values.get(request.query.get("key", ""))
        if value is None:
            return await _not_found(request)
        return web.Response(text=value, content_type="text/plain", charset="utf-8")


async def _not_found(_: web.Request) -> web.Response:
    """Go's `http.NotFound`, which the guest agent answers with."""
    response = web.Response(status=404, text="404 page not found\n", content_type="text/plain", charset="utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
