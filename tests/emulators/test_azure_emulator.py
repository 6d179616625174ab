"""The Azure Scheduled Events emulator on the wire."""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime

import httpx

from spotrun.emulators.azure import AzureEmulator
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


async def test_first_call_may_be_slow():
    emu = AzureEmulator(first_call_delay_s=0.5)
    async with emu, httpx.AsyncClient(base_url=emu.url, timeout=0.2) as c:
        try:
            await c.get(URL, params=OK, headers=META)
            raise AssertionError("the first call should not have been answered yet")
        except httpx.ReadTimeout:
            pass
        assert (await c.get(URL, params=OK, headers=META)).status_code == 200
