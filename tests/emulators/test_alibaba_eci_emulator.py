"""The Alibaba ECS metadata and ECI guest-agent emulators on the wire."""

from __future__ import annotations

import re

import httpx

from spotrun.emulators.alibaba import AlibabaEmulator
from spotrun.emulators.eci import EciEmulator

TERMINATION = "/latest/meta-data/instance/spot/termination-time"
TTL = "X-aliyun-ecs-metadata-token-ttl-seconds"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_alibaba_termination_time_and_hardened_mode():
    emu = AlibabaEmulator(token_required=True)
    async with emu, httpx.AsyncClient(base_url=emu.url) as c:
        assert (await c.get(TERMINATION)).status_code == 403
        assert (await c.put("/latest/api/token", headers={TTL: "0"})).status_code == 400
        token = (await c.put("/latest/api/token", headers={TTL: "60"})).text
        auth = {"X-aliyun-ecs-metadata-token": token}
        assert (await c.get(TERMINATION, headers=auth)).status_code == 404
        assert (await c.get("/latest/meta-data/region-id", headers=auth)).text == "cn-hangzhou"
        emu.trigger()
        assert ISO.match((await c.get(TERMINATION, headers=auth)).text)
        forged = {"X-aliyun-ecs-metadata-token": "forged"}
        assert (await c.get(TERMINATION, headers=forged)).status_code == 401


async def test_eci_guest_agent_on_a_socket(tmp_path):
    socket = str(tmp_path / "agent.sock")
    emu = EciEmulator()
    url = await emu.start(socket_path=socket)
    try:
        transport = httpx.AsyncHTTPTransport(uds=socket)
        async with httpx.AsyncClient(base_url="http://eci", transport=transport) as c:
            key = {"key": "spot_termination_time"}
            assert (await c.get("/vm/metadata", params=key)).status_code == 404
            emu.trigger(lead_s=60)
            assert ISO.match((await c.get("/vm/metadata", params=key)).text)
            assert (await c.get("/vm/metadata", params={"key": "instance_id"})).text == "eci-spotrunemulator"
    finally:
        await emu.stop()
    assert url == f"unix://{socket}"
