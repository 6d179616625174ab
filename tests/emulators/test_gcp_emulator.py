"""The GCE metadata emulator on the wire, and google-auth's own metadata client against it."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx

from spotrun.emulators.gcp import GcpEmulator
from spotrun.emulators.profile import InstanceProfile

FLAVOR = {"Metadata-Flavor": "Google"}
V1 = "/computeMetadata/v1"

CREDENTIALS = """
import json
import google.auth.transport.requests as transport
from google.auth import compute_engine
credentials = compute_engine.Credentials()
credentials.refresh(transport.Request())
print(json.dumps({"token": credentials.token, "email": credentials.service_account_email,
                  "valid": credentials.valid}))
"""

GOOGLE_AUTH = """
import json
import google.auth.transport.requests as transport
from google.auth.compute_engine import _metadata
request = transport.Request()
print(json.dumps({
    "ping": _metadata.ping(request),
    "preempted": _metadata.get(request, "instance/preempted"),
    "project": _metadata.get_project_id(request),
    "scheduling": _metadata.get(request, "instance/scheduling", recursive=True),
}))
"""


async def google_auth_sees(url: str, script: str = GOOGLE_AUTH) -> dict:
    """Run google-auth in a fresh interpreter: it reads GCE_METADATA_HOST at import time."""
    host = url.removeprefix("http://")
    env = {**os.environ, "GCE_METADATA_HOST": host, "GCE_METADATA_IP": host}
    pipe = asyncio.subprocess.PIPE
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env, stdout=pipe, stderr=pipe)
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 0, err.decode()
    return json.loads(out)


async def test_google_auth_reads_the_emulator():
    async with GcpEmulator(project_id="proj-7") as emu:
        before = await google_auth_sees(emu.url)
        emu.trigger()
        after = await google_auth_sees(emu.url)
    assert before["ping"] is True and before["project"] == "proj-7"
    assert (before["preempted"], after["preempted"]) == ("FALSE", "TRUE")
    assert before["scheduling"] == {
        "automaticRestart": "FALSE", "onHostMaintenance": "TERMINATE", "preemptible": "TRUE", "provisioningModel": "SPOT"
    }


async def test_flavor_header_is_required():
    async with GcpEmulator() as emu, httpx.AsyncClient(base_url=emu.url) as c:
        refused = await c.get(f"{V1}/instance/preempted")
        assert refused.status_code == 403 and "Metadata-Flavor" in refused.text
        forwarded = await c.get(f"{V1}/instance/preempted", headers={**FLAVOR, "X-Forwarded-For": "1.2.3.4"})
        assert forwarded.status_code == 403
        answer = await c.get(f"{V1}/instance/preempted", headers=FLAVOR)
        assert answer.text == "FALSE" and answer.headers["metadata-flavor"] == "Google"
        assert answer.headers["etag"]


async def test_wait_for_change_semantics():
    async with GcpEmulator() as emu, httpx.AsyncClient(base_url=emu.url, headers=FLAVOR, timeout=30) as c:
        path = f"{V1}/instance/preempted"
        tag = (await c.get(path)).headers["etag"]
        stale = await c.get(path, params={"wait_for_change": "true", "last_etag": "0"})
        assert stale.text == "FALSE" and stale.headers["etag"] == tag  # different etag: at once
        wait = {"wait_for_change": "true", "last_etag": tag}
        timed_out = await c.get(path, params={**wait, "timeout_sec": "1"})
        assert timed_out.text == "FALSE" and timed_out.headers["etag"] == tag  # unchanged after timeout
        hanging = asyncio.create_task(c.get(path, params=wait))
        while emu.requests[path] < 4:
            await asyncio.sleep(0.01)
        assert not hanging.done()  # received, and held open: nothing changed yet
        emu.trigger()
        changed = await asyncio.wait_for(hanging, timeout=20)
        assert changed.text == "TRUE" and changed.headers["etag"] != tag
        as_json = await c.get(path, params={"alt": "json"})
        assert as_json.json() == "TRUE" and as_json.headers["etag"] == changed.headers["etag"]


async def test_503_blip_and_maintenance_values():
    async with GcpEmulator() as emu, httpx.AsyncClient(base_url=emu.url, headers=FLAVOR) as c:
        emu.fail_next(1, 503)
        assert (await c.get(f"{V1}/instance/maintenance-event")).status_code == 503
        assert (await c.get(f"{V1}/instance/maintenance-event")).text == "NONE"
        emu.trigger(kind="maintenance", action="MIGRATE_ON_HOST_MAINTENANCE")
        assert (await c.get(f"{V1}/instance/maintenance-event")).text == "MIGRATE_ON_HOST_MAINTENANCE"


async def test_google_auth_compute_engine_credentials_refresh():
    async with GcpEmulator() as emu:
        seen = await google_auth_sees(emu.url, CREDENTIALS)
    assert seen["valid"] is True and seen["token"].startswith("ya29.")
    assert seen["email"] == "000000000000-compute@developer.gserviceaccount.com"


async def test_termination_handler_start_up_checks_and_profile():
    """GCP's k8s-node-termination-handler runs only if on-host-maintenance is TERMINATE."""
    spot = GcpEmulator(profile=InstanceProfile(type="a2-highgpu-1g", zone="europe-west4-a", name="trainer"))
    async with spot, httpx.AsyncClient(base_url=spot.url, headers=FLAVOR) as c:
        assert (await c.get(f"{V1}/instance/scheduling/on-host-maintenance")).text == "TERMINATE"
        assert (await c.get(f"{V1}/instance/scheduling/preemptible")).text == "TRUE"
        assert (await c.get(f"{V1}/instance/zone")).text.endswith("/zones/europe-west4-a")
        assert (await c.get(f"{V1}/instance/machine-type")).text.endswith("/machineTypes/a2-highgpu-1g")
        assert (await c.get(f"{V1}/instance/name")).text == "trainer"
    standard = GcpEmulator(profile=InstanceProfile(lifecycle="on-demand"))
    async with standard, httpx.AsyncClient(base_url=standard.url, headers=FLAVOR) as c:
        assert (await c.get(f"{V1}/instance/scheduling/on-host-maintenance")).text == "MIGRATE"
        assert (await c.get(f"{V1}/instance/scheduling/provisioning-model")).text == "STANDARD"


async def test_bad_hanging_gets_are_refused_at_once():
    """Integer `timeout_sec` only, and directory waits need recursive=true: both 400, no hang."""
    async with GcpEmulator() as emu, httpx.AsyncClient(base_url=emu.url, headers=FLAVOR, timeout=10) as c:
        wait = {"wait_for_change": "true"}
        for bad in ("1.5", "soon", "-3"):
            answer = await c.get(f"{V1}/instance/preempted", params={**wait, "timeout_sec": bad})
            assert answer.status_code == 400 and "timeout_sec" in answer.text
        folder = await c.get(f"{V1}/instance/scheduling/", params=wait)
        assert folder.status_code == 400 and "recursive" in folder.text
        recursive = await c.get(f"{V1}/instance/scheduling/", params={**wait, "recursive": "true", "timeout_sec": "1"})
        assert recursive.status_code == 200 and recursive.json()["preemptible"] == "TRUE"
