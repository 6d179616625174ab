"""The sim provider: instances as in-memory state machines, in wall or virtual time (docs/sim.md)."""

from spotrun.providers.sim.clock import Clock, RealClock, VirtualClock
from spotrun.providers.sim.config import SimConfig
from spotrun.providers.sim.provider import SimProvider

__all__ = ["Clock", "RealClock", "SimConfig", "SimProvider", "VirtualClock"]
