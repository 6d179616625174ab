"""The AWS IMDS emulator on the wire, and botocore's own IMDS client against it."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request

import httpx
import pytest
from botocore.utils import InstanceMetadataFetcher, InstanceMetadataRegionFetcher

from spotrun.emulators.aws import AwsEmulator
from spotrun.emulators.base import ControlError, EmulatorThread
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import utcnow

TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"
MD = "/latest/meta-data"


def test_botocore_fetches_role_credentials_over_imdsv2():
    with EmulatorThread(AwsEmulator()) as emu:  # IMDSv2 required by default
        fetcher = InstanceMetadataFetcher(base_url=emu.url, timeout=5, num_attempts=2)
        credentials = fetcher.retrieve_iam_role_credentials()
        requests = emu.call(lambda: dict(emu.emulator.requests))
    assert credentials["role_name"] == "spotrun-emulator-role"
    assert credentials["access_key"].startswith("ASIA") and credentials["token"]
    assert requests["/latest/api/token"] == 1  # it really went through IMDSv2


async def test_token_rules():
    async with AwsEmulator() as emu, httpx.AsyncClient(base_url=emu.url) as c:
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
    async with AwsEmulator(imdsv2_required=False) as emu, httpx.AsyncClient(base_url=emu.url) as c:
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
    async with AwsEmulator(imdsv2_required=False) as emu, httpx.AsyncClient(base_url=emu.url) as c:
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


# --- what real clients do, and what an IMDSv2-only instance answers them ---------------------


def check_spot_interruption(url: str) -> int:
    """The popular guide's handler: a plain GET of instance-action, no token; 200 means reclaim."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    try:
        with direct.open(f"{url}{MD}/spot/instance-action", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code


def test_a_tokenless_handler_is_refused_by_default_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, "spotrun.emulators.aws")
    with EmulatorThread(AwsEmulator()) as emu:
        emu.call(emu.emulator.trigger, action="terminate")
        assert check_spot_interruption(emu.url) == 401  # it would never fire on such an instance
    [line] = [r.getMessage() for r in caplog.records if r.name == "spotrun.emulators.aws"]
    assert "/latest/meta-data/spot/instance-action" in line and "--allow-imdsv1" in line
    assert "\n" not in line
    with EmulatorThread(AwsEmulator(imdsv2_required=False)) as emu:
        emu.call(emu.emulator.trigger, action="terminate")
        assert check_spot_interruption(emu.url) == 200


async def test_nothing_scheduled_is_an_empty_list_not_a_404():
    """aws-node-termination-handler's client: token with TTL 3600, then any non-2xx is an error."""
    async with AwsEmulator() as emu, httpx.AsyncClient(base_url=emu.url) as c:
        token = (await c.put("/latest/api/token", headers={TTL: "3600"})).text
        for item in ("scheduled", "history"):
            answer = await c.get(f"{MD}/events/maintenance/{item}", headers={TOKEN: token})
            assert answer.status_code == 200 and answer.json() == []
        emu.trigger(kind="maintenance", action="instance-stop", lead_s=3600)
        [event] = (await c.get(f"{MD}/events/maintenance/scheduled", headers={TOKEN: token})).json()
        assert event["Code"] == "instance-stop"


async def test_every_instance_fact_comes_from_one_profile():
    profile = InstanceProfile(id="i-0fedcba9876543210", type="p4d.24xlarge", zone="us-west-2b",
                              lifecycle="on-demand", user_data="#!/bin/bash\necho hi\n")
    async with AwsEmulator(profile=profile) as emu, httpx.AsyncClient(base_url=emu.url) as c:
        auth = {TOKEN: (await c.put("/latest/api/token", headers={TTL: "60"})).text}

        async def get(path: str) -> httpx.Response:
            return await c.get(path, headers=auth)

        facts = {item: (await get(f"{MD}/{item}")).text for item in (
            "instance-id", "instance-type", "placement/availability-zone", "placement/region",
            "instance-life-cycle", "local-hostname")}
        assert facts == {"instance-id": "i-0fedcba9876543210", "instance-type": "p4d.24xlarge",
                         "placement/availability-zone": "us-west-2b", "placement/region": "us-west-2",
                         "instance-life-cycle": "on-demand", "local-hostname": "ip-10-0-0-1.ec2.internal"}
        document = await get("/latest/dynamic/instance-identity/document")
        assert document.headers["server"] == "EC2ws" and '"instanceId" : "i-0fedcba9876543210"' in document.text
        doc = document.json()
        assert (doc["instanceType"], doc["availabilityZone"], doc["region"]) == ("p4d.24xlarge", "us-west-2b", "us-west-2")
        assert (await get("/latest/user-data")).text == profile.user_data
        assert set((await get("/latest/")).text.splitlines()) == {"dynamic", "meta-data", "user-data"}
        missing = await get("/latest/dynamic/fws/instance-monitoring")
        assert missing.status_code == 404 and "<title>404 - Not Found</title>" in missing.text
        assert missing.headers["server"] == "EC2ws"
        with pytest.raises(ControlError, match="lifecycle on-demand"):
            emu.trigger(kind="reclaim")  # on-demand capacity is never reclaimed
        emu.trigger(kind="maintenance")  # but it is maintained
    async with AwsEmulator() as emu, httpx.AsyncClient(base_url=emu.url) as c:
        auth = {TOKEN: (await c.put("/latest/api/token", headers={TTL: "60"})).text}
        no_user_data = await c.get("/latest/user-data", headers=auth)
        assert no_user_data.status_code == 404 and "404 - Not Found" in no_user_data.text  # as EC2


def test_botocore_reads_the_region_from_the_profile_zone():
    with EmulatorThread(AwsEmulator(profile=InstanceProfile(zone="eu-west-3c"))) as emu:
        fetcher = InstanceMetadataRegionFetcher(timeout=5, num_attempts=2, base_url=emu.url)
        assert fetcher.retrieve_region() == "eu-west-3"
