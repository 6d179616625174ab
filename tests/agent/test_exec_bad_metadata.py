"""`spotrun exec` when the metadata endpoint lies first and tells the truth after."""

from __future__ import annotations

import json

from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.emulators.azure import AzureEmulator
from spotrun.emulators.base import EmulatorThread

from .helpers import child_cmd, wait_for

NAME = "/metadata/instance/compute/name"
EVENTS = "/metadata/scheduledevents"


def test_azure_garbage_name_then_a_real_preempt_still_reclaims(agent, out, tmp_path):
    """Issue 13 #7: a garbage 200 to compute/name was stored as the VM's name and the later
    Preempt for this VM ignored; now the name is checked, asked again, and the Preempt heard."""
    emulator = AzureEmulator()
    emulator.fail_next(1, status=200)  # "200 (injected by spotrun emulator)" as the VM's name
    notice_file = tmp_path / "n.json"
    with EmulatorThread(emulator) as emu:
        a = agent(["--provider", "azure", "--metadata-url", emu.url, "--notice-file", str(notice_file)],
                  child_cmd(out, "handle"))
        wait_for(lambda: (out / "ready").exists(), "the command to start")
        wait_for(lambda: emu.call(lambda: emulator.requests[EVENTS]) > 0, "the watcher past the bad name")
        assert emu.call(lambda: emulator.requests[NAME]) >= 2  # asked again, not adopted
        emu.call(emulator.trigger, action="Preempt")
        assert a.wait() == EXIT_RECLAIMED, a.log
    notice = json.loads(notice_file.read_text())
    assert (notice["provider"], notice["kind"], notice["action"]) == ("azure", "reclaim", "preempt")
    assert "spotrun-vm" in notice["raw"]["Resources"]
