"""Prices: a bundled table of common instance types, and AWS's live spot history and placement scores.

The controller prices attempts with `lookup(provider, instance_type) -> (spot, on_demand)`.
The AWS calls take an `endpoint_url` so they can run against a local EC2 endpoint (moto).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    """The bundled price table: `compiled` date, `note`, and `prices` rows with their `source`."""
    return json.loads((resources.files("spotrun.market") / "prices.json").read_text())


def rows(provider: str | None = None, instance_types: list[str] | None = None) -> list[dict[str, Any]]:
    wanted = {t.lower() for t in instance_types or []}
    return [
        r for r in table()["prices"]
        if (provider is None or r["provider"] == provider.lower())
        and (not wanted or r["instance_type"].lower() in wanted)
    ]


def lookup(provider: str, instance_type: str) -> tuple[float, float]:
    """(spot, on-demand) $/h from the bundled table; KeyError names the types it knows."""
    found = rows(provider, [instance_type])
    if not found:
        known = ", ".join(r["instance_type"] for r in rows(provider)) or "none"
        raise KeyError(f"no price for {provider} {instance_type} in the bundled table (known: {known})")
    return found[0]["spot"], found[0]["on_demand"]


def _ec2(region: str, endpoint_url: str | None):
    import boto3

    return boto3.client("ec2", region_name=region, endpoint_url=endpoint_url)


def _aws_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    return (BotoCoreError, ClientError, ResponseParserError)


def _aws_error(exc: Exception, what: str) -> RuntimeError:
    """An AWS failure as one line that says what to do."""
    from botocore.exceptions import ClientError, NoCredentialsError
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ResponseParserError):
        return RuntimeError(f"{what}: the endpoint sent a response that is not AWS's (it may not implement this call)")
    if isinstance(exc, NoCredentialsError):
        return RuntimeError(f"{what}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return RuntimeError(f"{what}: AWS said {err.get('Code', 'error')}: {err.get('Message', exc)}")
    return RuntimeError(f"{what}: {exc}")


def spot_history(
    region: str,
    instance_types: list[str],
    since: timedelta,
    endpoint_url: str | None = None,
    product: str = "Linux/UNIX",
) -> list[dict[str, Any]]:
    """Spot price changes per zone and type over the last `since`, newest first."""
    start = datetime.now(timezone.utc) - since
    out: list[dict[str, Any]] = []
    try:
        pages = _ec2(region, endpoint_url).get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=instance_types, StartTime=start, ProductDescriptions=[product]
        )
        for page in pages:
            for item in page.get("SpotPriceHistory", []):
                ts = item.get("Timestamp")
                out.append({
                    "zone": item.get("AvailabilityZone"),
                    "instance_type": item.get("InstanceType"),
                    "spot": float(item["SpotPrice"]),
                    "time": ts.isoformat() if ts else None,
                })
    except _aws_errors() as exc:
        raise _aws_error(exc, "spot price history") from None
    return sorted(out, key=lambda r: r["time"] or "", reverse=True)


def placement_scores(
    region: str, instance_types: list[str], capacity: int = 1, endpoint_url: str | None = None
) -> dict[str, int]:
    """AWS spot placement scores (1-10, how likely a request succeeds) per zone name of `region`."""
    ec2 = _ec2(region, endpoint_url)
    try:
        resp = ec2.get_spot_placement_scores(
            InstanceTypes=instance_types, TargetCapacity=capacity, SingleAvailabilityZone=True,
            RegionNames=[region],
        )
        names = {z["ZoneId"]: z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]}
    except _aws_errors() as exc:
        raise _aws_error(exc, "spot placement scores") from None
    return {
        names.get(s.get("AvailabilityZoneId"), s.get("AvailabilityZoneId") or s.get("Region")): int(s["Score"])
        for s in resp.get("SpotPlacementScores", [])
    }
