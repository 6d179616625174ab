"""Hand-built markets and a policy that plays a fixed script: how the tests pin down every number."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from spotrun.market.policy import Decision, JobSpec, Observation
from spotrun.market.sim import Market
from spotrun.market.trace import Trace


def market(*zones: Sequence[int], gap_s: float = 600.0) -> Market:
    """A market from 0/1 lists, one per zone."""
    return Market.of([Trace(f"z{i}", gap_s, np.asarray(z, dtype=bool)) for i, z in enumerate(zones)])


class Script:
    """Plays one decision per tick: how the tests enumerate every possible plan."""

    name = "script"

    def __init__(self, decisions: Sequence[Decision]):
        self.decisions = list(decisions)

    def reset(self, job: JobSpec) -> None:
        self.i = 0

    def decide(self, obs: Observation) -> Decision:
        d = self.decisions[min(self.i, len(self.decisions) - 1)]
        self.i += 1
        return d
