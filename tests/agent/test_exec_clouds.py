"""`spotrun exec` against the cloud emulators over real HTTP: notice in, signal out, ack back."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.emulators.aws import AwsEmulator
from spotrun.emulators.azure import AzureEmulator
from spotrun.emulators.base import EmulatorThread
from spotrun.emulators.gcp import GcpEmulator

from .helpers import child_cmd, wait_for


@pytest.mark.parametrize(
    ("provider", "make", "trigger", "lead_s", "extra"),
    [
        ("aws", lambda: AwsEmulator(imdsv2_required=True), {"action": "terminate", "lead_s": 120.0}, 120, []),
        ("gcp", GcpEmulator, {}, 30, []),
        ("azure", AzureEmulator, {"action": "Preempt", "lead_s": 30.0}, 30, ["--azure-vm-name", "spotrun-vm"]),
        ("azure", AzureEmulator, {"action": "Preempt", "lead_s": 30.0}, 30, ["--no-ack"]),
    ],
    ids=["aws", "gcp", "azure", "azure-no-ack"],
)
def test_a_cloud_notice_stops_the_command(agent, out, tmp_path, provider, make, trigger, lead_s, extra):
    emulator = make()
    with EmulatorThread(emulator) as emu:
        args = ["--provider", provider, "--metadata-url", emu.url, "--notice-file", str(tmp_path / "n.json")]
        a = agent(args + extra, child_cmd(out, "handle"))
        wait_for(lambda: (out / "ready").exists(), "the command to start")
        wait_for(lambda: emu.call(lambda: sum(emulator.requests.values())) > 0, "the watcher's first request")
        sent = datetime.now(timezone.utc)
        event = emu.call(emulator.trigger, **trigger)
        assert a.wait() == EXIT_RECLAIMED, a.log
        seen = json.loads((out / "got-SIGTERM").read_text())
        assert (seen["provider"], seen["kind"]) == (provider, "reclaim")
        left = (datetime.fromisoformat(seen["deadline"]) - sent).total_seconds()
        assert lead_s - 5 < left <= lead_s + 1
        if provider == "azure":  # acknowledged once the command had stopped, unless told not to
            acked = [] if "--no-ack" in extra else [event["EventId"]]
            assert emu.call(lambda: emulator.state()["approved"]) == acked
