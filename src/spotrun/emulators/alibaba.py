"""Alibaba Cloud ECS metadata service (100.100.100.200) as a spot instance sees it.

`GET /latest/meta-data/instance/spot/termination-time` is 404 while the instance is safe and a
UTC `2015-01-05T18:02:00Z` once it is scheduled for release (about 5 minutes ahead). Hardened
mode (`token_required=True`): `PUT /latest/api/token` with
`X-aliyun-ecs-metadata-token-ttl-seconds: 1..21600` (400 otherwise), then every request carries
`X-aliyun-ecs-metadata-token`; a missing one is refused with 403, an invalid or expired one
with 401 (the exact codes are not documented; these follow IMDSv2).

Control operations beyond the shared ones (see `spotrun.emulators.base`):
    POST /_spotrun/expire-tokens   every issued token becomes invalid
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from spotrun.emulators.aws import iso_z
from spotrun.emulators.base import ControlError, Emulator, TokenBook, tree_lookup
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import utcnow

TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aliyun-ecs-metadata-token"
DEFAULT_LEAD_S = 300.0


class AlibabaEmulator(Emulator):
    cloud = "alibaba"
    title = "Alibaba"
    DEFAULTS = {"id": "i-bp1a2b3c4d5e6f7g8h9i", "type": "ecs.gn7i-c8g1.2xlarge", "zone": "cn-hangzhou-i"}

    def __init__(self, *, token_required: bool = False, profile: InstanceProfile | None = None) -> None:
        super().__init__(profile)
        self.token_required = token_required
        self.tokens = TokenBook()
        self.termination_time: str | None = None
        zone = str(self.profile.zone)
        self._static = {
            "instance-id": str(self.profile.id),
            "region-id": zone.rsplit("-", 1)[0],  # cn-hangzhou-i is in cn-hangzhou
            "zone-id": zone,
            "instance/instance-type": str(self.profile.type),
            "instance/spot/strategy": "SpotAsPriceGo" if self.profile.spot else "NoSpot",
        }

    def trigger(
        self, kind: str = "reclaim", action: str | None = None, lead_s: float | None = None
    ) -> dict[str, Any]:
        self.check_kind(kind, ("reclaim",))
        if action not in (None, "delete"):
            raise ControlError(f"Alibaba spot instances are only released; drop --action, not {action!r}")
        self.termination_time = iso_z(utcnow() + timedelta(seconds=DEFAULT_LEAD_S if lead_s is None else lead_s))
        return {"termination-time": self.termination_time}

    def clear(self) -> None:
        self.termination_time = None

    def state(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "token_required": self.token_required,
            "instance/spot/termination-time": self.termination_time,
        }

    def control_ops(self) -> dict[str, Any]:
        return {"expire-tokens": self.tokens.revoke_all}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.put("/latest/api/token", self._token),
            web.get("/latest/meta-data", self._metadata),
            web.get("/latest/meta-data/{path:.*}", self._metadata),
        ]

    async def _token(self, request: web.Request) -> web.Response:
        ttl = TokenBook.parse_ttl(request.headers.get(TTL_HEADER))
        if ttl is None:
            return web.Response(status=400, text=f"{TTL_HEADER} must be 1..21600\n")
        return web.Response(text=self.tokens.issue(ttl), content_type="text/plain")

    async def _metadata(self, request: web.Request) -> web.Response:
        token = request.headers.get(TOKEN_HEADER)
        if token and self.tokens.remaining(token) is None:
            return web.Response(status=401, text="Unauthorized\n")
        if not token and self.token_required:
            return web.Response(status=403, text="Forbidden\n")
        values = dict(self._static)
        if self.termination_time:
            values["instance/spot/termination-time"] = self.termination_time
        body = tree_lookup(values, request.match_info.get("path", ""))
        if body is None:
            return web.Response(status=404, text="Not Found\n", content_type="text/html")
        return web.Response(text=body, content_type="text/plain")
