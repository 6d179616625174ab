"""Elice Cloud Infrastructure (ECI): the guest agent's Unix socket.

An ECI spot VM asks its guest agent over HTTP on `/run/eci-guest-agent.sock`:
`/vm/metadata?key=spot_termination_time` is `404 page not found` while no reclaim is scheduled
and the termination time (`2026-04-08T05:00:00+00:00`) once it is (the vendor's "Operating spot
VMs" guide, elice.io/help/en/docs/eci/compute/spot-vm). Any RFC3339 offset is accepted.
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
