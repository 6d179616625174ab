"""GcpWatcher against the GCE metadata emulator: hanging GETs, ETags, 503s."""

from __future__ import annotations

from datetime import timedelta

from spotrun.emulators.gcp import GcpEmulator
from spotrun.notices.base import NoticeKind
from spotrun.notices.gcp import GcpWatcher

from .helpers import assert_close, wait_until

PREEMPTED = "/computeMetadata/v1/instance/preempted"
MAINTENANCE = "/computeMetadata/v1/instance/maintenance-event"


async def hanging(emu: GcpEmulator) -> None:
    """The watcher has its first answers and now hangs on both items."""
    await wait_until(lambda: emu.requests[PREEMPTED] >= 2 and emu.requests[MAINTENANCE] >= 2, "hanging GETs")


async def test_preemption_arrives_through_the_hanging_get(serve, collect):
    emu = GcpEmulator()
    seen = collect(GcpWatcher(await serve(emu)))
    await hanging(emu)
    emu.trigger()
    [notice] = await seen.wait_count(1)
    assert (notice.provider, notice.kind, notice.action) == ("gcp", NoticeKind.RECLAIM, "preempt")
    assert_close(notice.deadline, notice.received_at + timedelta(seconds=30), slack_s=0.01)
    # one answer woke the pending request: no polling while nothing changed
    assert emu.requests[PREEMPTED] <= 3
    emu.trigger(kind="maintenance")  # a different item changes; the preemption is not repeated
    notices = await seen.wait_count(2)
    assert notices[1].kind is NoticeKind.MAINTENANCE
    assert notices[1].action == "terminate_on_host_maintenance"


async def test_deadline_is_configurable(serve, collect):
    emu = GcpEmulator()
    seen = collect(GcpWatcher(await serve(emu), deadline_s=120))
    emu.trigger(lead_s=120)
    [notice] = await seen.wait_count(1)
    assert_close(notice.deadline, notice.received_at + timedelta(seconds=120), slack_s=0.01)


async def test_503_blips_are_retried(serve, collect):
    emu = GcpEmulator()
    emu.fail_next(4, status=503)
    emu.trigger()
    seen = collect(GcpWatcher(await serve(emu)))
    [notice] = await seen.wait_count(1)
    assert notice.kind is NoticeKind.RECLAIM
    assert emu.responses[503] == 4


async def test_preempted_again_after_recovering_is_a_new_notice(serve, collect):
    emu = GcpEmulator()
    seen = collect(GcpWatcher(await serve(emu)))
    await hanging(emu)
    emu.trigger()
    await seen.wait_count(1)
    emu.clear()
    await wait_until(lambda: emu.requests[PREEMPTED] >= 4, "the FALSE answer")
    assert len(seen.notices) == 1
    emu.trigger()
    await seen.wait_count(2)
