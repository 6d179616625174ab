"""The local spot market: when a spot instance on this machine gets its reclaim notice.

Every decision is made once, at launch, and handed to the instance launcher as one absolute
time (`notice_at`), so reclaims keep happening on schedule while the controller is down.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spotrun.sdk.atomic import save_atomic

if TYPE_CHECKING:
    from spotrun.market.trace import Trace

CLOUDS = ("aws", "gcp", "azure")

# The clouds' own notice lead times (reference/notices.md §0).
CLOUD_LEAD_S = {"aws": 120.0, "gcp": 30.0, "azure": 30.0}

DEFAULT_ZONE = "local-a"

# Used when the market's price table does not know the type: the paper's p3.2xlarge prices.
DEFAULT_PRICES = (0.918, 3.06)


@dataclass(frozen=True)
class MarketConfig:
    """How the local market reclaims spot instances; on-demand instances are never reclaimed.

    Reclaims come from exponential lifetimes (`mean_lifetime_s`, reproducible with `seed`),
    from availability traces (`trace`: a file or bundled trace name for every zone, or a
    zone -> trace mapping; a trace loops when it runs out), and from
    `LocalProvider.interrupt`; combine them freely.
    """

    cloud: str = "aws"  # whose metadata endpoint and notice lead time instances imitate
    lead_s: float | None = None  # notice lead time; None: the cloud's own (AWS 120 s, GCP/Azure 30 s)
    mean_lifetime_s: float | None = None
    seed: int | None = None
    # a file or bundled name for every zone, or a zone -> one (or a loaded Trace) mapping
    trace: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str] | Trace] | None = None
    time_scale: float = 1.0  # wall seconds per trace second: 1/600 plays a 600 s tick in 1 s
    trace_epoch: float | None = None  # wall time of tick 0; None: fixed under the provider root
    zone: str | None = None  # used when a launch names none; default the trace's first zone
    _traces: dict[str, Trace] = field(default_factory=dict, init=False, repr=False, compare=False)
    _gaps: dict[int, Any] = field(default_factory=dict, init=False, repr=False, compare=False)  # id(trace) -> its gap ticks

    def __post_init__(self) -> None:
        if self.cloud not in CLOUDS:
            raise ValueError(f"unknown cloud {self.cloud!r}: choose one of {', '.join(CLOUDS)}")
        if self.lead_s is not None and self.lead_s < 0:
            raise ValueError(f"lead_s must be >= 0, not {self.lead_s}")
        if self.mean_lifetime_s is not None and self.mean_lifetime_s <= 0:
            raise ValueError(f"mean_lifetime_s must be > 0, not {self.mean_lifetime_s}")
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, not {self.time_scale}")
        if self.trace is not None:
            from spotrun.market.trace import Trace, load_trace  # numpy: only when traces are used

            paths = self.trace if isinstance(self.trace, Mapping) else {"*": self.trace}
            self._traces.update({zone: p if isinstance(p, Trace) else load_trace(p) for zone, p in paths.items()})

    @property
    def notice_lead_s(self) -> float:
        return CLOUD_LEAD_S[self.cloud] if self.lead_s is None else self.lead_s

    def default_zone(self) -> str:
        if self.zone:
            return self.zone
        return next((z for z in self._traces if z != "*"), DEFAULT_ZONE)

    def _trace_for(self, zone: str) -> Trace | None:
        return self._traces.get(zone) or self._traces.get("*")

    def _tick_s(self, trace: Trace) -> float:
        return trace.gap_s * self.time_scale

    def traced_zones(self) -> list[str] | None:
        """The zones traces name, when every zone needs one (no `*` trace); None otherwise."""
        if not self._traces or "*" in self._traces:
            return None
        return sorted(self._traces)

    def _tick(self, trace: Trace, now: float, epoch: float) -> int:
        return math.floor((now - epoch) / self._tick_s(trace)) % trace.ticks

    def price(self, zone: str, now: float, epoch: float) -> float | None:
        """The zone's trace's spot $/h at wall time `now`, when its trace carries prices."""
        trace = self._trace_for(zone)
        if trace is None or trace.prices is None:
            return None
        return float(trace.prices[self._tick(trace, now, epoch)])

    def available(self, zone: str, now: float, epoch: float) -> bool:
        """Whether a spot launch in `zone` is possible at wall time `now`."""
        trace = self._trace_for(zone)
        if trace is None:
            return True
        return bool(trace.available[self._tick(trace, now, epoch)])

    def notice_at(self, token: str, zone: str, now: float, epoch: float) -> float | None:
        """Wall time a spot instance launched now gets its reclaim notice; None: never."""
        times = []
        if self.mean_lifetime_s is not None:
            # Seeded per token: the same launch draws the same lifetime in any order or process.
            rng = random.Random(f"{self.seed}:{token}") if self.seed is not None else random.Random()
            times.append(now + rng.expovariate(1.0 / self.mean_lifetime_s))
        trace = self._trace_for(zone)
        if trace is not None:
            tick_s = self._tick_s(trace)
            first = math.floor((now - epoch) / tick_s)
            ahead = self._ticks_to_gap(trace, first % trace.ticks)  # the trace loops
            if ahead is not None:
                times.append(max(now, epoch + (first + ahead) * tick_s))
        return min(times, default=None)

    def _ticks_to_gap(self, trace: Trace, tick: int) -> int | None:
        """Ticks from `tick` to the trace's next unavailable one, looping; None: it has none.
        A binary search over the gaps, found once per trace: a launch costs the same at any fleet size."""
        import numpy as np

        gaps = self._gaps.get(id(trace))
        if gaps is None:
            gaps = self._gaps[id(trace)] = np.flatnonzero(~trace.available)
        if not gaps.size:
            return None
        i = int(np.searchsorted(gaps, tick))
        return int(gaps[i]) - tick if i < gaps.size else int(gaps[0]) + trace.ticks - tick

    def epoch(self, root: Path) -> float:
        """Tick 0's wall time, fixed once per provider root so a restarted controller agrees."""
        if self.trace_epoch is not None:
            return self.trace_epoch
        path = root / "market-epoch.json"
        if not path.exists():
            # Link, not rename: of two controllers starting at once, the first one's epoch wins.
            tmp = save_atomic(root / f".market-epoch.{os.getpid()}", json.dumps({"trace_epoch": time.time()}))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return float(json.loads(path.read_text())["trace_epoch"])


def prices(cloud: str, instance_type: str | None) -> tuple[float, float]:
    """(spot, on-demand) $/h from the market's price table; a local instance may have no type
    or one the table does not know, and then costs the default, so accounting never fails."""
    from spotrun.market.prices import lookup

    if instance_type is None:
        return DEFAULT_PRICES
    try:
        return lookup(cloud, instance_type)
    except KeyError:
        return DEFAULT_PRICES
