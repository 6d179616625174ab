"""A local instance's metadata endpoint: the chosen cloud's emulator, aware of its own reclaims.

A reclaim may come from the market (inside the launcher) or from `interrupt` (the emulator's
HTTP control request, from any process); either way the emulator serves the notice to the
agent and tells the launcher, which then takes the instance away at the deadline.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

from spotrun.emulators.base import Emulator

# cloud -> (module, class) of its emulator, imported on use: only the chosen one is needed,
# and the seconds the cloud itself adds after the lead its notice announces: GCP's notice comes
# `lead_s` before the ACPI soft-off and the VM is hard-off 30 s later (reference/notices.md §0).
EMULATORS = {
    "aws": ("spotrun.emulators.aws", "AwsEmulator", 0.0),
    "gcp": ("spotrun.emulators.gcp", "GcpEmulator", 30.0),
    "azure": ("spotrun.emulators.azure", "AzureEmulator", 0.0),
}


class _ReportsReclaims:
    """Mixed into an emulator: a reclaim notice also sets `deadline` (wall time) for the launcher.

    A trigger that names no lead time gets the instance's configured one, and the lead is the
    time until the machine is gone whatever the cloud, so the notice the agent reads and the
    moment the launcher pulls the plug agree (GCP's last 30 s are its shutdown grace).
    """

    def __init__(self, lead_s: float, cloud_adds_s: float) -> None:
        super().__init__()  # type: ignore[call-arg]
        self.lead_s = lead_s
        self.cloud_adds_s = cloud_adds_s
        self.reclaimed = asyncio.Event()
        self.deadline: float | None = None

    def trigger(self, kind: str = "reclaim", action: str | None = None, lead_s: float | None = None) -> dict[str, Any]:
        if kind != "reclaim":
            return super().trigger(kind, action, lead_s)  # type: ignore[misc]
        if lead_s is None:
            lead_s = 0.0 if action == "hibernate" else self.lead_s
        event = super().trigger(kind, action, max(0.0, lead_s - self.cloud_adds_s))  # type: ignore[misc]
        if not self.reclaimed.is_set():
            self.deadline = time.time() + lead_s
            self.reclaimed.set()
        return event


def new_emulator(cloud: str, lead_s: float) -> Emulator:
    module, name, cloud_adds_s = EMULATORS[cloud]
    base = getattr(importlib.import_module(module), name)
    local = type(f"Local{name}", (_ReportsReclaims, base), {})
    return local(lead_s, cloud_adds_s)


async def wait_for_reclaim(emulator: Emulator) -> float:
    """The deadline, once the emulator has served a reclaim notice."""
    await emulator.reclaimed.wait()  # type: ignore[attr-defined]
    return emulator.deadline  # type: ignore[attr-defined,return-value]


async def request_reclaim(url: str, lead_s: float | None) -> None:
    """The control request `interrupt` sends to an instance's emulator from another process.

    Without `lead_s` the instance's own lead time applies (the one its launch was given).
    """
    import httpx

    body: dict[str, Any] = {"kind": "reclaim"}
    if lead_s is not None:
        body["lead_s"] = lead_s
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{url}/_spotrun/trigger", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"the instance's emulator refused the reclaim ({response.status_code}): {response.text}")
