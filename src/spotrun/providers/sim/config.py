"""What the sim provider's market looks like: reclaims, notice lead, boot delay, prices.

Reclaims and refusals are the local provider's market (`MarketConfig`: traces per zone, an
exponential rate, a notice lead), reused as is; the sim adds what a machine-free instance needs
to behave like one: how long it takes to boot and what a zone charges.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotrun.providers.local.market import MarketConfig

DEFAULT_ZONE = "sim-a"
CONFIG_ENV = "SPOTRUN_SIM"  # a YAML file of `SimConfig.from_dict` settings, for `spotrun controller run`
RETAIN_S = 3600.0  # an ended instance is forgotten (GONE) this long after it ended

_KEYS = {"trace", "mean_lifetime", "seed", "lead", "boot", "zone", "time_scale", "cloud", "spot_price",
         "on_demand_price", "zone_prices", "retain"}


@dataclass(frozen=True)
class SimConfig:
    market: MarketConfig = field(default_factory=lambda: MarketConfig(zone=DEFAULT_ZONE))
    boot_s: float = 0.0  # launch -> running: the part of a changeover the instance pays
    spot_price: float | None = None  # $/h; None: the bundled table for the type, else the paper's
    on_demand_price: float | None = None
    zone_prices: Mapping[str, float] = field(default_factory=dict)  # spot $/h per zone
    retain_s: float = RETAIN_S

    def __post_init__(self) -> None:
        for name in ("boot_s", "retain_s", "spot_price", "on_demand_price"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"sim {name} must be a finite number >= 0, not {value!r}")
        for zone, price in self.zone_prices.items():
            if isinstance(price, bool) or not isinstance(price, (int, float)) or not price >= 0:
                raise ValueError(f"sim zone_prices.{zone} must be a $/h number >= 0, not {price!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "sim settings") -> SimConfig:
        """`trace` (file, bundled name, or zone -> either), `mean_lifetime`, `seed`, `lead`, `boot`,
        `zone`, `time_scale`, `cloud` (whose notice lead), `spot_price`, `on_demand_price`,
        `zone_prices`, `retain`; durations as in job specs (`90s`, `2h`)."""
        from spotrun.durations import parse_duration

        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a mapping of settings ({', '.join(sorted(_KEYS))})")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown setting {', '.join(map(str, unknown))} (known: {', '.join(sorted(_KEYS))})")

        def seconds(key: str) -> float | None:
            value = data.get(key)
            if value is None:
                return None
            try:
                return parse_duration(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}: {key}: {exc}") from None

        trace = data.get("trace")
        if isinstance(trace, Mapping):
            trace = {str(z): str(t) for z, t in trace.items()}
        market = MarketConfig(
            cloud=str(data.get("cloud", "aws")), lead_s=seconds("lead"), mean_lifetime_s=seconds("mean_lifetime"),
            seed=data.get("seed"), trace=trace, time_scale=float(data.get("time_scale", 1.0)),
            zone=data.get("zone") or (None if isinstance(trace, Mapping) else DEFAULT_ZONE),
        )
        return cls(market=market, boot_s=seconds("boot") or 0.0, spot_price=data.get("spot_price"),
                   on_demand_price=data.get("on_demand_price"), zone_prices=dict(data.get("zone_prices") or {}),
                   retain_s=seconds("retain") or RETAIN_S)

    @classmethod
    def from_env(cls) -> SimConfig:
        """From the YAML file `$SPOTRUN_SIM` names; the defaults (no reclaims) when unset."""
        path = os.environ.get(CONFIG_ENV)
        if not path:
            return cls()
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"${CONFIG_ENV}: cannot read {path}: {exc}") from None
        return cls.from_dict(data, f"${CONFIG_ENV} ({path})")
