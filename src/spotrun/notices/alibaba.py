"""Alibaba Cloud ECS: the spot termination time in instance metadata (100.100.100.200).

404 (or, per older docs, an empty body) means the instance is safe; a UTC time means it will
be released then. Hardened mode's session token is used when the service hands one out and
skipped when it does not (normal mode), so one watcher works on both kinds of instance.
"""

from __future__ import annotations

from collections.abc import Hashable

import httpx

from spotrun.notices.base import Notice
from spotrun.notices.http import (
    BadResponse,
    PollingWatcher,
    SessionToken,
    metadata_client,
    termination_notice,
)

DEFAULT_URL = "http://100.100.100.200"
TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aliyun-ecs-metadata-token"
PATH = "/latest/meta-data/instance/spot/termination-time"


class AlibabaWatcher(PollingWatcher):
    provider = "alibaba"

    def __init__(
        self,
        metadata_url: str | None = None,
        *,
        poll_interval: float | None = None,
        token_ttl_s: int = 21600,
    ) -> None:
        super().__init__(metadata_client(metadata_url or DEFAULT_URL), poll_interval)
        self.token = SessionToken(
            self.client,
            ttl_header=TTL_HEADER,
            token_header=TOKEN_HEADER,
            ttl_s=token_ttl_s,
            optional=True,
            log=self.log,
            hint="check that the metadata service is enabled on this instance",
        )

    async def poll(self) -> list[tuple[Hashable, Notice]]:
        response = await self.token.get(PATH)
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise BadResponse(f"GET {PATH}: HTTP {response.status_code}")
        notice = termination_notice(self.provider, response.text)
        return [(("termination-time", notice.raw), notice)] if notice else []


async def probe(client: httpx.AsyncClient) -> bool:
    """Alibaba answers a token PUT with its own header (AWS refuses it), or serves region-id."""
    response = await client.put("/latest/api/token", headers={TTL_HEADER: "60"})
    if response.status_code == 200 and response.text.strip():
        return True
    response = await client.get("/latest/meta-data/region-id")
    return response.status_code == 200 and bool(response.text.strip())
