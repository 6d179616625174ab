"""Prices for cost accounting and the market policy: spot per zone from EC2, on-demand bundled.

Spot prices move a few times a day, so each (region, type, zone) is asked once per `TTL_S`
with one `describe_spot_price_history` call (newest row); on-demand list prices come from a
bundled table (`on_demand.json`), as the Pricing API is slow, global and needs its own
permission. An instance type missing from the table is priced from its spot price at the
typical 70 % discount, and said so in the log.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from typing import Any

log = logging.getLogger("spotrun.aws")

TTL_S = 300.0
TYPICAL_SPOT_DISCOUNT = 0.7


@cache
def on_demand_table() -> dict[str, float]:
    raw = json.loads(resources.files(__package__).joinpath("on_demand.json").read_text())
    return {k: float(v) for k, v in raw.items() if not k.startswith("_")}


class SpotPrices:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str | None], tuple[float, float]] = {}  # key -> (price, at)

    def spot(self, ec2: Any, region: str, instance_type: str, zone: str | None) -> float | None:
        key = (region, instance_type, zone)
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[1] < TTL_S:
            return hit[0]
        kwargs: dict[str, Any] = {
            "InstanceTypes": [instance_type], "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": datetime.now(timezone.utc), "MaxResults": 20,
        }
        if zone:
            kwargs["AvailabilityZone"] = zone
        try:
            rows = ec2.describe_spot_price_history(**kwargs).get("SpotPriceHistory", [])
        except Exception as exc:  # noqa: BLE001  a price is for accounting; never fail a launch on it
            log.warning("spot price of %s in %s unknown: %s", instance_type, zone or region, exc)
            return hit[0] if hit else None
        if not rows:
            return None
        # Without a zone, the cheapest zone's newest price (what a zone-free launch tends to get).
        newest: dict[str, tuple[datetime, float]] = {}
        for row in rows:
            z = row.get("AvailabilityZone", "")
            if z not in newest or row["Timestamp"] > newest[z][0]:
                newest[z] = (row["Timestamp"], float(row["SpotPrice"]))
        price = min(p for _, p in newest.values())
        self._cache[key] = (price, time.monotonic())
        return price


def on_demand(instance_type: str, spot_price: float | None) -> float | None:
    price = on_demand_table().get(instance_type)
    if price is None and spot_price is not None:
        log.info("no on-demand list price for %s bundled; estimating it from the spot price", instance_type)
        return spot_price / (1 - TYPICAL_SPOT_DISCOUNT)
    return price
