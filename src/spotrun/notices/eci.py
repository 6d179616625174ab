"""Alibaba Elastic Container Instance (ECI): the guest agent's Unix socket.

Inside an ECI pod there is no link-local metadata address to reach; the guest agent answers
HTTP on `/run/eci-guest-agent.sock`, with the spot termination time under
`/vm/metadata?key=spot_termination_time` (404 while the pod is safe).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

from spotrun.notices.base import Notice
from spotrun.notices.http import BadResponse, PollingWatcher, metadata_client, termination_notice

DEFAULT_SOCKET = "/run/eci-guest-agent.sock"
PATH = "/vm/metadata"


def socket_path(metadata_url: str | None) -> str:
    """`unix:///path/to.sock` or a bare path; the default guest-agent socket when None."""
    if not metadata_url:
        return DEFAULT_SOCKET
    return metadata_url.removeprefix("unix://")


class EciWatcher(PollingWatcher):
    provider = "eci"

    def __init__(self, metadata_url: str | None = None, *, poll_interval: float | None = None) -> None:
        self.socket_path = socket_path(metadata_url)
        super().__init__(metadata_client("http://eci-guest-agent", uds=self.socket_path), poll_interval)

    async def poll(self) -> list[tuple[Hashable, Notice]]:
        response = await self.client.get(PATH, params={"key": "spot_termination_time"})
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise BadResponse(f"guest agent at {self.socket_path}: HTTP {response.status_code}")
        notice = termination_notice(self.provider, response.text)
        return [(("termination-time", notice.raw), notice)] if notice else []


def available(metadata_url: str | None) -> bool:
    """ECI is detected by its guest-agent socket existing, without a request."""
    return Path(socket_path(metadata_url)).is_socket()
