"""AWS EC2 instance metadata (IMDS): spot interruption, rebalance and maintenance notices.

The reclaim signal is `spot/instance-action`, polled every cycle. The legacy
`spot/termination-time` is deliberately NOT read: after a failed termination it stays behind
with a past time while `instance-action` is gone, so trusting it would give a false notice.
Rebalance recommendations and scheduled maintenance are advisory and polled less often.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from datetime import datetime, timezone
from typing import Any

import httpx

from spotrun.notices.base import Notice, NoticeKind
from spotrun.notices.http import (
    BadResponse,
    PollingWatcher,
    SessionToken,
    identifier,
    metadata_client,
    parse_utc,
    plausible,
)

DEFAULT_URL = "http://169.254.169.254"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
RECLAIM_ACTIONS = ("terminate", "stop", "hibernate")
ADVISORY_EVERY = 5  # rebalance/maintenance every 5th poll: 5 s at the default, AWS's own advice


class AwsWatcher(PollingWatcher):
    provider = "aws"

    def __init__(
        self,
        metadata_url: str | None = None,
        *,
        allow_imdsv1: bool = False,
        poll_interval: float | None = None,
        token_ttl_s: int = 21600,
    ) -> None:
        super().__init__(metadata_client(metadata_url or DEFAULT_URL), poll_interval)
        self.token = SessionToken(
            self.client,
            ttl_header=TTL_HEADER,
            token_header=TOKEN_HEADER,
            ttl_s=token_ttl_s,
            optional=allow_imdsv1,
            log=self.log,
            hint="if this instance serves only IMDSv1, pass allow_imdsv1=True (--allow-imdsv1)",
        )
        self._cycle = 0

    async def poll(self) -> list[tuple[Hashable, Notice]]:
        found: list[tuple[Hashable, Notice]] = []
        body = await self._get("/latest/meta-data/spot/instance-action")
        if body is not None:
            found.append(instance_action_notice(body))
        if self._cycle % ADVISORY_EVERY == 0:
            body = await self._get("/latest/meta-data/events/recommendations/rebalance")
            if body is not None:
                found.append(rebalance_notice(body))
            body = await self._get("/latest/meta-data/events/maintenance/scheduled")
            if body is not None:
                found.extend(maintenance_notices(body))
        self._cycle += 1
        return found

    async def _get(self, path: str) -> str | None:
        """The item's text, or None when IMDS says 404 (nothing to report)."""
        response = await self.token.get(path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BadResponse(f"GET {path}: HTTP {response.status_code}")
        return response.text


async def probe(client: httpx.AsyncClient) -> bool:
    """Is this an EC2 metadata service? A token PUT only EC2 answers, or an IMDSv1 `EC2ws`."""
    response = await client.put("/latest/api/token", headers={TTL_HEADER: "60"})
    if response.status_code == 200 and response.text.strip():
        return True
    response = await client.get("/latest/meta-data/instance-id")
    return response.status_code in (200, 401) and response.headers.get("server") == "EC2ws"


def _json(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise BadResponse(f"not JSON: {body[:60]!r}") from None


def instance_action_notice(body: str) -> tuple[Hashable, Notice]:
    data = _json(body)
    if not isinstance(data, dict) or data.get("action") not in RECLAIM_ACTIONS:
        raise BadResponse(f"spot/instance-action is not a spot action: {body[:80]!r}")
    when = data.get("time")
    if not isinstance(when, str):
        raise BadResponse(f"spot/instance-action has no time: {body[:80]!r}")
    # A past time is still a notice: the action is overdue, not cancelled.
    notice = Notice("aws", NoticeKind.RECLAIM, data["action"], parse_utc(when), raw=data)
    return ("instance-action", data["action"], when), notice


def rebalance_notice(body: str) -> tuple[Hashable, Notice]:
    data = _json(body)
    when = data.get("noticeTime") if isinstance(data, dict) else None
    if not isinstance(when, str):
        raise BadResponse(f"rebalance recommendation without noticeTime: {body[:80]!r}")
    parse_utc(when)
    return ("rebalance", when), Notice("aws", NoticeKind.REBALANCE, "rebalance", None, raw=data)


def maintenance_notices(body: str) -> list[tuple[Hashable, Notice]]:
    events = _json(body)
    if not isinstance(events, list):
        raise BadResponse(f"scheduled maintenance is not a list: {body[:80]!r}")
    found = []
    for event in events:
        if not isinstance(event, dict) or event.get("State") != "active":
            continue  # canceled and completed events are history, not notices
        event_id = identifier(event.get("EventId"), "maintenance EventId")
        code = identifier(event.get("Code"), "maintenance Code")
        deadline = event_time(event.get("NotBefore"))
        notice = Notice("aws", NoticeKind.MAINTENANCE, code, deadline, raw=event)
        found.append((("maintenance", event_id), notice))
    return found


def event_time(text: Any) -> datetime:
    """A maintenance date, `21 Jan 2019 09:00:43 GMT` (not RFC3339)."""
    try:
        when = datetime.strptime(str(text), "%d %b %Y %H:%M:%S GMT").replace(tzinfo=timezone.utc)
    except ValueError:
        raise BadResponse(f"maintenance NotBefore is not a date: {text!r:.60}") from None
    return plausible(when)
