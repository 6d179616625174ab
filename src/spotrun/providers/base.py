"""The one interface every provider implements (as SkyPilot's `sky/provision/<cloud>/`).

The controller speaks only this; `local` runs instances as process groups on this machine,
cloud providers map the same few calls onto their APIs. Every call is idempotent: the
controller may be killed at any line and call again after a restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class InstanceState(str, enum.Enum):
    PENDING = "pending"  # asked for, not yet running the agent
    RUNNING = "running"
    NOTICE = "notice"  # the cloud has announced a reclaim; the agent is saving work
    RECLAIMED = "reclaimed"  # taken back by the cloud
    EXITED = "exited"  # the agent exited by itself; see `returncode`
    TERMINATED = "terminated"  # stopped by us
    GONE = "gone"  # the provider knows nothing of it (never launched, or cleaned up)
    # Never became the job: no heartbeat within the boot timeout. The image, the install or the
    # network is at fault, not the cloud's capacity, so it counts against the error budget.
    UNBOOTED = "unbooted"


# States after which an instance will never run the job again.
ENDED = frozenset(
    {InstanceState.EXITED, InstanceState.RECLAIMED, InstanceState.TERMINATED, InstanceState.GONE, InstanceState.UNBOOTED}
)


@dataclass(frozen=True)
class LaunchRequest:
    """Everything an instance needs to run one attempt of a job."""

    token: str  # client token: launching twice with one token yields one instance
    job_id: str
    attempt: int
    run: str  # shell command the agent supervises
    setup: str | None = None
    workdir: str | None = None  # copied onto the instance before setup
    env: dict[str, str] = field(default_factory=dict)
    spot: bool = True
    instance_type: str | None = None
    zone: str | None = None
    max_price: float | None = None
    agent_args: tuple[str, ...] = ()  # extra `spotrun exec` options (checkpoint, notice, ...)
    # The identity of the database (controller cluster) launching it, kept with the instance:
    # a controller terminates only instances that carry its own.
    owner: str | None = None
    # Resolved secret values for the command's environment: a provider hands them to the
    # instance but never writes them into its records, logs or anything it lists.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    cloud: dict = field(default_factory=dict)  # the spec's cloud-only settings (region, image, aws: ...)


@dataclass(frozen=True)
class Instance:
    id: str
    token: str
    job_id: str
    attempt: int
    state: InstanceState
    spot: bool
    zone: str | None = None
    instance_type: str | None = None
    price_per_hour: float | None = None
    launched_at: float | None = None  # unix time
    ended_at: float | None = None
    returncode: int | None = None  # the agent's exit status once EXITED (75 = reclaimed)
    log_path: str | None = None
    owner: str | None = None  # LaunchRequest.owner of the launch that made it
    detail: str = ""  # the cloud's own words for how it ended (OOMKilled, evicted), shown in the timeline


class LaunchRefused(Exception):
    """The provider will not launch now (no capacity, price above max, quota). Retry later."""


class Provider(Protocol):
    name: str

    async def launch(self, request: LaunchRequest) -> Instance:
        """Start an instance, or return the one already started with `request.token`."""

    async def query(self, instance_id: str) -> Instance:
        """Observed state now; GONE when the provider has no such instance."""

    async def list_instances(self, job_id: str | None = None) -> list[Instance]:
        """Every instance this provider holds (for one job), to find leaks after a crash."""

    async def terminate(self, instance_id: str) -> None:
        """Stop it and free its resources; a no-op when already gone."""

    async def interrupt(self, instance_id: str, lead_s: float | None = None) -> None:
        """Reclaim it now with the cloud's notice (local and sim providers; others refuse)."""

    def prices(self, instance_type: str | None, zone: str | None) -> tuple[float, float]:
        """(spot, on-demand) $/h, for cost accounting."""


@runtime_checkable
class KnowsSpotAvailability(Protocol):
    """Optional: a provider that can tell whether a spot launch would get capacity right now."""

    def spot_available(self, instance_type: str | None, zone: str | None) -> bool | None:
        """True/False when known; None when the provider cannot tell."""


def spot_available(provider: Provider, instance_type: str | None, zone: str | None) -> bool | None:
    """The provider's answer when it implements `KnowsSpotAvailability`, else None (unknown)."""
    if isinstance(provider, KnowsSpotAvailability):
        return provider.spot_available(instance_type, zone)
    return None
