"""The Azure Scheduled Events emulator on the wire."""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime

import httpx
import pytest

from spotrun.emulators.azure import AzureEmulator
from spotrun.emulators.base import ControlError
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import utcnow

URL = "/metadata/scheduledevents"
OK = {"api-version": "2020-07-01"}
META = {"Metadata": "true"}


async def test_request_rules():
    emu = AzureEmulator(rate_limit=False)
    async with emu, httpx.AsyncClient(base_url=emu.url) as c:
        no_header = await c.get(URL, params=OK)
        assert no_header.status_code == 400 and "metadata header" in no_header.json()["error"]
        no_version = await c.get(URL, headers=META)
        assert no_version.status_code == 400 and "2020-07-01" in no_version.json()["newest-versions"]
        assert (await c.get(URL, params={"api-version": "2099-01-01"}, headers=META)).status_code == 400
        twice = await c.get(f"{URL}?api-version=2020-07-01&api-version=2020-07-01", headers=META)
        assert twice.status_code == 400
        forwarded = await c.get(URL, params=OK, headers={**META, "X-Forwarded-For": "1.2.3.4"})
        assert forwarded.status_code == 400
        assert (await c.get(URL, params=OK, headers=META)).json() == {"DocumentIncarnation": 1, "Events": []}
        text = {"api-version": "2021-02-01", "format": "text"}
        name = await c.get("/metadata/instance/compute/name", params=text, headers=META)
        assert name.text == "spotrun-vm"


async def test_more_than_five_requests_a_second_get_429():
    async with AzureEmulator() as emu, httpx.AsyncClient(base_url=emu.url, headers=META, params=OK) as c:
        answers = await asyncio.gather(*(c.get(URL) for _ in range(12)))
    assert 429 in {a.status_code for a in answers}
    assert sum(a.status_code == 200 for a in answers) >= 1


async def test_event_lifecycle_incarnation_and_approval():
    emu = AzureEmulator(rate_limit=False)
    async with emu, httpx.AsyncClient(base_url=emu.url, headers=META, params=OK) as c:
        other = emu.trigger(action="Preempt", lead_s=5, resources=["other-vm"])
        mine = emu.trigger(action="Preempt", lead_s=5)
        document = (await c.get(URL)).json()
        assert document["DocumentIncarnation"] == 3
        assert [e["Resources"] for e in document["Events"]] == [["other-vm"], ["spotrun-vm"]]
        not_before = parsedate_to_datetime(document["Events"][1]["NotBefore"])
        assert document["Events"][1]["NotBefore"].endswith(" GMT")
        assert (not_before - utcnow()).total_seconds() > 28  # Preempt: at least 30 s, even if asked for 5
        bad = await c.post(URL, json={"StartRequests": [{"EventId": "nope"}]})
        assert bad.status_code == 400
        assert (await c.post(URL, content=b"{not json")).status_code == 400
        assert (await c.post(URL, json={"StartRequests": [{"EventId": mine["EventId"]}]})).status_code == 200
        started = (await c.get(URL)).json()
        assert started["DocumentIncarnation"] == 4
        assert (started["Events"][1]["EventStatus"], started["Events"][1]["NotBefore"]) == ("Started", "")
        assert started["Events"][0]["EventStatus"] == "Scheduled"
        emu.cancel(other["EventId"])
        after = (await c.get(URL)).json()
        assert after["DocumentIncarnation"] == 5 and [e["EventId"] for e in after["Events"]] == [mine["EventId"]]


async def test_each_api_version_gets_the_document_of_its_time():
    """A client written from Microsoft's docs, asking with each api-version it may pin."""
    emu = AzureEmulator(rate_limit=False)
    async with emu, httpx.AsyncClient(base_url=emu.url, headers=META) as c:
        emu.trigger(action="Preempt")
        emu.trigger(kind="maintenance", action="Reboot")

        async def events(version: str) -> list[dict]:
            answer = await c.get(URL, params={"api-version": version})
            assert answer.status_code == 200
            return answer.json()["Events"]

        old = await events("2017-08-01")  # before Preempt existed (added in 2017-11-01)
        assert [e["EventType"] for e in old] == ["Reboot"]
        assert "Description" not in old[0] and "EventSource" not in old[0]
        preempt, _ = await events("2017-11-01")
        assert preempt["EventType"] == "Preempt" and "DurationInSeconds" not in preempt
        assert "EventSource" in (await events("2019-08-01"))[0]
        assert "DurationInSeconds" not in (await events("2019-08-01"))[0]
        newest = (await events("2020-07-01"))[0]
        assert {"Description", "EventSource", "DurationInSeconds"} <= set(newest)


async def test_every_call_waits_while_the_service_enables_itself():
    emu = AzureEmulator(first_call_delay_s=3.0)
    async with emu, httpx.AsyncClient(base_url=emu.url, params=OK, headers=META, timeout=0.5) as c:
        for _ in range(2):  # the first call, and one made while the service is still enabling
            with pytest.raises(httpx.ReadTimeout):
                await c.get(URL)
        assert (await c.get(URL, timeout=30)).status_code == 200
        assert (await c.get(URL)).status_code == 200  # enabled: answered at once from now on


async def test_compute_facts_come_from_the_profile():
    profile = InstanceProfile(name="trainer-3", type="Standard_ND96asr_v4", zone="eastus-2", lifecycle="on-demand")
    emu = AzureEmulator(profile=profile, rate_limit=False)
    async with emu, httpx.AsyncClient(base_url=emu.url, headers=META) as c:
        compute = (await c.get("/metadata/instance", params={"api-version": "2021-02-01"})).json()["compute"]
        assert (compute["name"], compute["vmSize"], compute["location"], compute["zone"], compute["priority"]) == (
            "trainer-3", "Standard_ND96asr_v4", "eastus", "2", "Regular")
        with pytest.raises(ControlError, match="on-demand"):
            emu.trigger(action="Preempt")
