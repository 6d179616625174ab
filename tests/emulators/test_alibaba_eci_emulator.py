"""The Alibaba ECS metadata and Elice Cloud (ECI) guest-agent emulators on the wire."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime

import httpx

from spotrun.emulators.alibaba import AlibabaEmulator
from spotrun.emulators.base import EmulatorThread
from spotrun.emulators.eci import EciEmulator
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import utcnow

TERMINATION = "/latest/meta-data/instance/spot/termination-time"
TTL = "X-aliyun-ecs-metadata-token-ttl-seconds"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DOCUMENTED_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")  # "2026-04-08T05:00:00+00:00"


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


def curl_eci(socket: str) -> tuple[str, str]:
    """The vendor's own watcher command (ECI "Operating spot VMs" guide): status and body."""
    done = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "--unix-socket", socket,
         "http://localhost/vm/metadata?key=spot_termination_time"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return status, body


async def test_eci_answers_curl_over_the_socket_as_documented(tmp_path):
    socket = str(tmp_path / "agent.sock")
    with EmulatorThread(EciEmulator(profile=InstanceProfile(id="eci-7")), socket_path=socket) as emu:
        assert emu.url == f"unix://{socket}"
        assert curl_eci(socket) == ("404", "404 page not found\n")
        emu.call(emu.emulator.trigger, lead_s=90)
        status, body = curl_eci(socket)
        assert status == "200" and DOCUMENTED_TIME.match(body), body  # `+00:00`, not `Z`
        when = datetime.fromisoformat(body)
        assert 80 < (when - utcnow()).total_seconds() <= 90
        transport = httpx.HTTPTransport(uds=socket)
        with httpx.Client(base_url="http://eci", transport=transport) as c:
            assert c.get("/vm/metadata", params={"key": "instance_id"}).text == "eci-7"
            assert c.get("/anything/else").text == "404 page not found\n"
