"""The one interface every notice source implements.

Modelled on aws-node-termination-handler: one small monitor per notice source, each turning
its cloud's wire format into the same `Notice`, so the agent never knows which cloud it is on.
"""

from __future__ import annotations

import abc
import enum
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar


class NoticeKind(str, enum.Enum):
    RECLAIM = "reclaim"  # the machine goes away: save work now
    REBALANCE = "rebalance"  # elevated risk of a reclaim soon: advisory
    MAINTENANCE = "maintenance"  # scheduled host event (reboot, retirement, migration)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Notice:
    """A reclaim, rebalance or maintenance notice, whatever cloud it came from."""

    provider: str
    kind: NoticeKind
    action: str  # e.g. terminate | stop | hibernate | preempt | delete
    deadline: datetime | None  # when the machine goes away (UTC); None when the cloud did not say
    received_at: datetime = field(default_factory=utcnow)
    raw: Any = None  # the payload as the cloud sent it, for logs and debugging

    def seconds_left(self, now: datetime | None = None) -> float | None:
        if self.deadline is None:
            return None
        return (self.deadline - (now or utcnow())).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "kind": self.kind.value,
            "action": self.action,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "received_at": self.received_at.isoformat(),
            "raw": self.raw,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notice:
        deadline = data.get("deadline")
        return cls(
            provider=str(data["provider"]),
            kind=NoticeKind(data["kind"]),
            action=str(data.get("action", "")),
            deadline=datetime.fromisoformat(deadline) if deadline else None,
            received_at=datetime.fromisoformat(data["received_at"]),
            raw=data.get("raw"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


class Watcher(abc.ABC):
    """One notice source. `watch()` yields each distinct notice once and runs until cancelled.

    A watcher never raises on a bad response from its source: it logs, backs off and keeps
    watching, because a crashed watcher would hear no notice at all.
    """

    provider: ClassVar[str]

    @abc.abstractmethod
    def watch(self) -> AsyncIterator[Notice]: ...

    async def acknowledge(self, notice: Notice) -> None:
        """Tell the cloud the job is ready to go (Azure `StartRequests`); a no-op elsewhere."""

    async def aclose(self) -> None:
        """Release connections; called once when the agent stops watching."""
