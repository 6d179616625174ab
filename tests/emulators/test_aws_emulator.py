"""The AWS IMDS emulator on the wire, and botocore's own IMDS client against it."""

from __future__ import annotations

import json
import re

import httpx
from botocore.utils import InstanceMetadataFetcher

from spotrun.emulators.aws import AwsEmulator
from spotrun.emulators.base import EmulatorThread
from spotrun.notices.base import utcnow

TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"
MD = "/latest/meta-data"


def test_botocore_fetches_role_credentials_over_imdsv2():
    with EmulatorThread(AwsEmulator(imdsv2_required=True)) as emu:
        fetcher = InstanceMetadataFetcher(base_url=emu.url, timeout=5, num_attempts=2)
        credentials = fetcher.retrieve_iam_role_credentials()
        requests = emu.call(lambda: dict(emu.emulator.requests))
    assert credentials["role_name"] == "spotrun-emulator-role"
    assert credentials["access_key"].startswith("ASIA") and credentials["token"]
    assert requests["/latest/api/token"] == 1  # it really went through IMDSv2


async def test_token_rules():
    async with AwsEmulator(imdsv2_required=True) as emu, httpx.AsyncClient(base_url=emu.url) as c:
        assert (await c.get(f"{MD}/instance-id")).status_code == 401
        assert (await c.put("/latest/api/token")).status_code == 400
        assert (await c.put("/latest/api/token", headers={TTL: "0"})).status_code == 400
        assert (await c.put("/latest/api/token", headers={TTL: "21601"})).status_code == 400
        assert (await c.put("/2021-03-23/api/token", headers={TTL: "60"})).status_code == 403
        forwarded = await c.put("/latest/api/token", headers={TTL: "60", "X-Forwarded-For": "10.0.0.9"})
        assert forwarded.status_code == 403
        issued = await c.put("/latest/api/token", headers={TTL: "300"})
        assert issued.status_code == 200 and issued.headers[TTL] == "300"
        assert len(issued.text) == 56
        answer = await c.get(f"{MD}/instance-life-cycle", headers={TOKEN: issued.text})
        assert answer.text == "spot"
        assert int(answer.headers[TTL]) <= 300  # counts down
        assert answer.headers["server"] == "EC2ws" and answer.headers["connection"] == "close"
        assert (await c.get(f"{MD}/instance-id", headers={TOKEN: "forged"})).status_code == 401
        emu.expire_tokens()
        assert (await c.get(f"{MD}/instance-id", headers={TOKEN: issued.text})).status_code == 401


async def test_instance_action_has_a_fixed_time_and_termination_time_lingers():
    async with AwsEmulator() as emu, httpx.AsyncClient(base_url=emu.url) as c:
        missing = await c.get(f"{MD}/spot/instance-action")
        assert missing.status_code == 404 and "<title>404 - Not Found</title>" in missing.text
        assert missing.headers["content-type"].startswith("text/html")
        event = emu.trigger(action="terminate")
        first = await c.get(f"{MD}/spot/instance-action")
        assert first.headers["content-type"] == "text/plain"
        assert json.loads(first.text) == event and " " not in first.text  # compact JSON
        second_now = utcnow().replace(microsecond=0)
        while utcnow().replace(microsecond=0) == second_now:  # let the clock tick a second
            await c.get(f"{MD}/instance-id")
        assert (await c.get(f"{MD}/spot/instance-action")).text == first.text
        assert (await c.get(f"{MD}/spot/termination-time")).text == event["time"]
        emu.fail_termination()
        assert (await c.get(f"{MD}/spot/instance-action")).status_code == 404
        assert (await c.get(f"{MD}/spot/termination-time")).text == event["time"]
        emu.clear()
        emu.trigger(action="stop")  # termination-time is for terminations only
        assert (await c.get(f"{MD}/spot/termination-time")).status_code == 404


async def test_listings_rebalance_and_maintenance_dates():
    async with AwsEmulator() as emu, httpx.AsyncClient(base_url=emu.url) as c:
        listing = (await c.get(f"{MD}/")).text.splitlines()
        assert {"instance-id", "placement/", "iam/"} <= set(listing)
        assert "spot/" not in listing
        emu.trigger(kind="rebalance")
        emu.trigger(kind="maintenance", action="system-reboot", lead_s=86400)
        assert "noticeTime" in (await c.get(f"{MD}/events/recommendations/rebalance")).json()
        [event] = (await c.get(f"{MD}/events/maintenance/scheduled")).json()
        assert event["State"] == "active" and event["Code"] == "system-reboot"
        date = re.compile(r"^\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$")
        assert date.match(event["NotBefore"]) and date.match(event["NotAfter"])
