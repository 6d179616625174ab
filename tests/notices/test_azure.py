"""AzureWatcher against the Scheduled Events emulator: own-VM filtering, approval, retries."""

from __future__ import annotations

import logging
from email.utils import parsedate_to_datetime

import pytest

from spotrun.emulators.azure import AzureEmulator
from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.azure import AzureWatcher
from spotrun.notices.base import NoticeKind

from .conftest import FAST
from .helpers import polls

EVENTS = "/metadata/scheduledevents"


async def test_preempt_for_this_vm_is_yielded_once(serve, collect):
    emu = AzureEmulator(profile=InstanceProfile(name="worker-7"))
    watcher = AzureWatcher(await serve(emu), poll_interval=FAST)  # name read from IMDS
    seen = collect(watcher)
    event = emu.trigger(action="Preempt")
    [notice] = await seen.wait_count(1)
    assert watcher.vm_name == "worker-7"
    assert (notice.provider, notice.kind, notice.action) == ("azure", NoticeKind.RECLAIM, "preempt")
    assert notice.deadline == parsedate_to_datetime(event["NotBefore"])
    assert notice.seconds_left() > 25  # Preempt comes at least 30 s ahead
    await polls(emu, EVENTS, 3)
    assert len(seen.notices) == 1


async def test_events_for_other_vms_are_ignored(serve, collect):
    emu = AzureEmulator(profile=InstanceProfile(name="worker-7"))
    seen = collect(AzureWatcher(await serve(emu), vm_name="worker-7", poll_interval=FAST))
    emu.trigger(action="Preempt", resources=["worker-8", "worker-9"])
    await polls(emu, EVENTS, 3)
    assert seen.notices == []
    emu.trigger(action="Terminate", resources=["worker-8", "worker-7"])
    [notice] = await seen.wait_count(1)
    assert (notice.kind, notice.action) == (NoticeKind.RECLAIM, "terminate")


@pytest.mark.parametrize("event_type", ["Reboot", "Freeze", "Redeploy"])
async def test_host_events_are_maintenance(serve, collect, event_type):
    emu = AzureEmulator()
    seen = collect(AzureWatcher(await serve(emu), vm_name=emu.vm_name, poll_interval=FAST))
    emu.trigger(kind="maintenance", action=event_type)
    [notice] = await seen.wait_count(1)
    assert (notice.kind, notice.action) == (NoticeKind.MAINTENANCE, event_type.lower())


async def test_acknowledge_starts_the_event_without_a_second_notice(serve, collect):
    emu = AzureEmulator()
    watcher = AzureWatcher(await serve(emu), vm_name=emu.vm_name, poll_interval=FAST)
    seen = collect(watcher)
    event = emu.trigger()
    [notice] = await seen.wait_count(1)
    incarnation = emu.incarnation
    await watcher.acknowledge(notice)
    assert emu.state()["approved"] == [event["EventId"]]
    started = emu.state()["Events"][0]
    assert (started["EventStatus"], started["NotBefore"]) == ("Started", "")
    assert emu.incarnation > incarnation
    await polls(emu, EVENTS, 3)
    assert len(seen.notices) == 1


async def test_410_429_and_500_are_retried(serve, collect):
    emu = AzureEmulator()
    for status in (410, 429, 500):
        emu.fail_next(1, status)
    emu.trigger()
    seen = collect(AzureWatcher(await serve(emu), vm_name=emu.vm_name, poll_interval=FAST))
    await seen.wait_count(1)
    assert [emu.responses[s] for s in (410, 429, 500)] == [1, 1, 1]


async def test_a_garbage_name_is_never_adopted(serve, collect, caplog):
    """One garbage 200 to compute/name, then the real name: a Preempt for this VM is heard."""
    emu = AzureEmulator(profile=InstanceProfile(name="worker-7"))
    emu.fail_next(1, status=200)  # the name request gets "200 (injected by spotrun emulator)"
    caplog.set_level(logging.WARNING, "spotrun.notices.azure")
    watcher = AzureWatcher(await serve(emu), poll_interval=FAST)
    seen = collect(watcher)
    await polls(emu, EVENTS, 2)
    assert watcher.vm_name == "worker-7"
    assert any("is not an Azure VM name" in r.getMessage() for r in caplog.records)
    emu.trigger(action="Preempt")
    [notice] = await seen.wait_count(1)
    assert (notice.kind, notice.action) == (NoticeKind.RECLAIM, "preempt")


def test_a_bad_vm_name_option_is_one_clear_error():
    with pytest.raises(ValueError, match="not an Azure VM name"):
        AzureWatcher("http://127.0.0.1:9", vm_name="200 (injected)")
