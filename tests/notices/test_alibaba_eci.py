"""AlibabaWatcher (HTTP, optional hardened-mode token) and EciWatcher (Unix socket)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from spotrun.emulators.alibaba import AlibabaEmulator
from spotrun.emulators.eci import EciEmulator
from spotrun.notices.alibaba import AlibabaWatcher
from spotrun.notices.base import NoticeKind, utcnow
from spotrun.notices.eci import EciWatcher

from .conftest import FAST
from .helpers import assert_close, polls

TERMINATION = "/latest/meta-data/instance/spot/termination-time"


@pytest.mark.parametrize("hardened", [False, True], ids=["normal", "hardened"])
async def test_alibaba_release_is_yielded_once(serve, collect, hardened):
    emu = AlibabaEmulator(token_required=hardened)
    seen = collect(AlibabaWatcher(await serve(emu), poll_interval=FAST))
    await polls(emu, TERMINATION, 2)
    assert seen.notices == []
    emu.trigger()
    [notice] = await seen.wait_count(1)
    assert (notice.provider, notice.kind, notice.action) == ("alibaba", NoticeKind.RECLAIM, "delete")
    assert_close(notice.deadline, utcnow() + timedelta(minutes=5))
    await polls(emu, TERMINATION, 3)
    assert len(seen.notices) == 1
    assert emu.responses[403] == 0


async def test_alibaba_expired_token_is_replaced(serve, collect):
    emu = AlibabaEmulator(token_required=True)
    seen = collect(AlibabaWatcher(await serve(emu), poll_interval=FAST))
    await polls(emu, TERMINATION, 2)
    emu.tokens.revoke_all()
    emu.trigger(lead_s=60)
    [notice] = await seen.wait_count(1)
    assert_close(notice.deadline, utcnow() + timedelta(minutes=1))
    assert emu.responses[401] >= 1 and emu.requests["/latest/api/token"] == 2


async def test_eci_release_over_the_guest_agent_socket(serve, collect, tmp_path):
    emu = EciEmulator()
    url = await serve(emu, socket_path=str(tmp_path / "eci.sock"))
    assert url.startswith("unix://")
    seen = collect(EciWatcher(url, poll_interval=FAST))
    await polls(emu, "/vm/metadata", 2)
    emu.trigger(lead_s=90)
    [notice] = await seen.wait_count(1)
    assert (notice.provider, notice.kind, notice.action) == ("eci", NoticeKind.RECLAIM, "delete")
    assert_close(notice.deadline, utcnow() + timedelta(seconds=90))
    await polls(emu, "/vm/metadata", 3)
    assert len(seen.notices) == 1
