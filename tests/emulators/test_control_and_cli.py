"""The control API, and `spotrun emulate` as a real child process driven from outside."""

from __future__ import annotations

import json
import os
import signal
import socket as _socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from spotrun.emulators.aws import AwsEmulator

TIMEOUT_S = 30.0


async def test_control_api_answers_clear_errors():
    async with AwsEmulator(imdsv2_required=False) as emu, httpx.AsyncClient(base_url=emu.url) as c:
        ok = await c.post("/_spotrun/trigger", json={"kind": "reclaim", "action": "stop", "lead_s": 60})
        assert ok.status_code == 200 and ok.json()["event"]["action"] == "stop"
        state = (await c.get("/_spotrun/state")).json()
        assert state["spot/instance-action"]["action"] == "stop"
        assert state["profile"]["lifecycle"] == "spot" and state["profile"]["id"] == emu.profile.id
        for body, needle in [
            ({"kind": "oops"}, "reclaim, rebalance, maintenance"),
            ({"action": "explode"}, "terminate"),
            ({"colour": "red"}, "colour"),
        ]:
            answer = await c.post("/_spotrun/trigger", json=body)
            assert answer.status_code == 400 and needle in answer.json()["error"]
        assert (await c.post("/_spotrun/trigger", content=b"{")).status_code == 400
        assert (await c.post("/_spotrun/nope")).status_code == 404
        assert (await c.post("/_spotrun/fail", json={"status": 500, "count": 2})).status_code == 200
        assert [(await c.get("/latest/meta-data/instance-id")).status_code for _ in range(3)] == [500, 500, 200]
        assert (await c.post("/_spotrun/clear")).status_code == 200
        assert (await c.get("/latest/meta-data/spot/instance-action")).status_code == 404


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def emulate(spotrun_cmd, spotrun_home) -> Iterator:  # type: ignore[no-untyped-def]
    """Start `spotrun emulate ...` children; read the URL from their first stdout line."""
    children: list[subprocess.Popen] = []

    def start(*args: str) -> tuple[subprocess.Popen, str]:
        child = subprocess.Popen(
            [*spotrun_cmd, "emulate", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        children.append(child)
        url = child.stdout.readline().strip()  # type: ignore[union-attr]
        assert url, child.stderr.read()  # type: ignore[union-attr]
        return child, url

    yield start
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        child.wait(timeout=TIMEOUT_S)


def cli(spotrun_cmd, *args: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([*spotrun_cmd, "emulate", *args], capture_output=True, text=True, timeout=60)


def test_emulate_aws_then_trigger_and_clear(emulate, spotrun_cmd):
    child, url = emulate("aws", "--imdsv2-required")
    assert url.startswith("http://127.0.0.1:")
    action = f"{url}/latest/meta-data/spot/instance-action"
    token = httpx.put(f"{url}/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}).text
    auth = {"X-aws-ec2-metadata-token": token}
    assert httpx.get(action, headers=auth).status_code == 404
    done = cli(spotrun_cmd, "trigger", url, "--action", "hibernate", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["event"]["action"] == "hibernate"
    assert httpx.get(action, headers=auth).json()["action"] == "hibernate"
    human = cli(spotrun_cmd, "trigger", url, "--kind", "rebalance")
    assert human.returncode == 0 and "noticeTime" in human.stdout
    assert cli(spotrun_cmd, "clear", url).returncode == 0
    assert httpx.get(action, headers=auth).status_code == 404
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=TIMEOUT_S) == 0


def test_notice_in_triggers_by_itself(emulate):
    _, url = emulate("gcp", "--notice-in", "200ms")
    preempted = f"{url}/computeMetadata/v1/instance/preempted"
    wait_for(lambda: httpx.get(preempted, headers={"Metadata-Flavor": "Google"}).text == "TRUE", "preemption")


def test_eci_on_a_socket_with_trigger_over_the_socket(emulate, spotrun_cmd, tmp_path):
    socket = tmp_path / "agent.sock"
    with _socket.socket(_socket.AF_UNIX) as stale:  # left behind by a crashed run: reclaimed
        stale.bind(str(socket))
    _, url = emulate("eci", "--socket", str(socket))
    assert url == f"unix://{socket}"
    done = cli(spotrun_cmd, "trigger", url, "--lead-time", "90s", "--json")
    assert done.returncode == 0, done.stderr
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://eci") as client:
        answer = client.get("/vm/metadata", params={"key": "spot_termination_time"})
    assert answer.text == json.loads(done.stdout)["event"]["spot_termination_time"]
    second = cli(spotrun_cmd, "eci", "--socket", str(socket))  # a live socket is never taken over
    assert second.returncode == 2 and "already serving" in " ".join(second.stderr.split())


def test_emulate_aws_refuses_tokenless_requests_and_says_so(emulate):
    child, url = emulate("aws")  # IMDSv2 required unless told otherwise
    action = f"{url}/latest/meta-data/spot/instance-action"
    assert httpx.get(action).status_code == 401
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=TIMEOUT_S) == 0
    [line] = [l for l in child.stderr.read().splitlines() if "without an IMDSv2 token" in l]  # type: ignore[union-attr]
    assert "/latest/meta-data/spot/instance-action" in line and "--allow-imdsv1" in line
    _, lenient = emulate("aws", "--allow-imdsv1")
    assert httpx.get(action.replace(url, lenient)).status_code == 404  # answered: nothing scheduled


def test_emulate_profile_is_served_by_every_path(emulate, spotrun_cmd, tmp_path):
    profile = tmp_path / "instance.yaml"
    profile.write_text("id: i-0aaaabbbbccccdddd\ntype: c7i.large\nzone: ap-south-1b\nlifecycle: on-demand\n")
    _, url = emulate("aws", "--allow-imdsv1", "--profile", str(profile))
    md = f"{url}/latest/meta-data"
    assert [httpx.get(f"{md}/{item}").text for item in ("instance-id", "instance-type", "instance-life-cycle")] == [
        "i-0aaaabbbbccccdddd", "c7i.large", "on-demand"]
    document = httpx.get(f"{url}/latest/dynamic/instance-identity/document").json()
    assert (document["instanceId"], document["region"]) == ("i-0aaaabbbbccccdddd", "ap-south-1")
    refused = cli(spotrun_cmd, "trigger", url)
    assert refused.returncode == 2 and "lifecycle=spot" in " ".join(refused.stderr.split())
    _, gcp = emulate("gcp", "--profile", "id=42,type=n2-standard-4,zone=asia-east1-b,lifecycle=spot")
    flavor = {"Metadata-Flavor": "Google"}
    assert httpx.get(f"{gcp}/computeMetadata/v1/instance/id", headers=flavor).text == "42"
    assert httpx.get(f"{gcp}/computeMetadata/v1/instance/zone", headers=flavor).text.endswith("asia-east1-b")


def test_emulate_azure_first_call_delay(emulate):
    _, url = emulate("azure", "--first-call-delay", "3s")
    events = f"{url}/metadata/scheduledevents"
    ask = {"params": {"api-version": "2020-07-01"}, "headers": {"Metadata": "true"}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(events, timeout=0.5, **ask)  # type: ignore[arg-type]
    assert httpx.get(events, timeout=30, **ask).status_code == 200  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["aws", "--profile", "colour=red"], "unknown profile key 'colour'"),
        (["aws", "--profile", "lifecycle=reserved"], "spot, on-demand"),
        (["gcp", "--profile", "missing.yaml"], "no profile file missing.yaml"),
        (["azure", "--first-call-delay", "soon"], "not a duration"),
        (["aws", "--action", "explode"], "terminate"),
        (["gcp", "--kind", "rebalance"], "GCP has no rebalance"),
        (["azure", "--notice-in", "soon"], "not a duration"),
        (["trigger", "http://127.0.0.1:9"], "no emulator answering"),
    ],
)
def test_bad_input_is_a_clear_error_not_a_traceback(spotrun_cmd, spotrun_home, args, needle):
    done = cli(spotrun_cmd, *args)
    assert done.returncode == 2
    assert needle in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_busy_port_is_a_clear_error(emulate, spotrun_cmd):
    _, url = emulate("azure")
    port = url.rsplit(":", 1)[1]
    done = cli(spotrun_cmd, "alibaba", "--port", port)
    assert done.returncode == 2 and "another --port" in " ".join(done.stderr.split())
