"""AwsWatcher against the AWS IMDS emulator over real HTTP."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from spotrun.emulators.aws import AwsEmulator
from spotrun.notices.aws import AwsWatcher, maintenance_notices
from spotrun.notices.base import NoticeKind, utcnow
from spotrun.notices.http import BadResponse

from .conftest import FAST
from .helpers import assert_close, polls, wait_until

ACTION = "/latest/meta-data/spot/instance-action"
TOKEN = "/latest/api/token"


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
async def test_spot_action_is_yielded_once_with_its_deadline(serve, collect, action):
    emu = AwsEmulator()
    watcher = AwsWatcher(await serve(emu), poll_interval=FAST)
    seen = collect(watcher)
    await polls(emu, ACTION, 2)
    assert seen.notices == []
    event = emu.trigger(action=action)
    [notice] = await seen.wait_count(1)
    assert (notice.provider, notice.kind, notice.action) == ("aws", NoticeKind.RECLAIM, action)
    assert notice.deadline == datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    lead = 0 if action == "hibernate" else 120  # hibernation gets no two-minute warning
    assert_close(notice.deadline, utcnow() + timedelta(seconds=lead))
    await polls(emu, ACTION, 5)
    assert len(seen.notices) == 1


async def test_rebalance_and_maintenance_arrive_with_the_reclaim(serve, collect):
    emu = AwsEmulator()
    seen = collect(AwsWatcher(await serve(emu), poll_interval=FAST))
    emu.trigger(kind="rebalance")
    maintenance = emu.trigger(kind="maintenance", action="instance-retirement", lead_s=3600)
    emu.trigger(action="terminate")
    notices = await seen.wait_count(3)
    by_kind = {n.kind: n for n in notices}
    assert set(by_kind) == {NoticeKind.RECLAIM, NoticeKind.REBALANCE, NoticeKind.MAINTENANCE}
    assert by_kind[NoticeKind.MAINTENANCE].action == "instance-retirement"
    assert by_kind[NoticeKind.MAINTENANCE].raw["EventId"] == maintenance["EventId"]
    assert_close(by_kind[NoticeKind.MAINTENANCE].deadline, utcnow() + timedelta(hours=1))
    assert by_kind[NoticeKind.REBALANCE].deadline is None
    await polls(emu, "/latest/meta-data/events/maintenance/scheduled", 2)
    assert len(seen.notices) == 3


def test_only_active_maintenance_events_are_notices():
    body = """[{"NotBefore": "2 Jan 2019 09:00:43 GMT", "Code": "system-reboot", "EventId": "e-1",
                "NotAfter": "2 Jan 2019 09:17:23 GMT", "State": "active"},
               {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot", "EventId": "e-2",
                "State": "canceled", "Description": "[Canceled] scheduled reboot"}]"""
    [(key, notice)] = maintenance_notices(body)
    assert key == ("maintenance", "e-1")
    assert notice.deadline == datetime(2019, 1, 2, 9, 0, 43, tzinfo=timezone.utc)
    with pytest.raises(BadResponse):
        maintenance_notices('[{"State": "active", "EventId": "e", "Code": "x", "NotBefore": "2019-01-02"}]')


async def test_expired_token_is_refreshed_after_a_401(serve, collect):
    emu = AwsEmulator()
    seen = collect(AwsWatcher(await serve(emu), poll_interval=FAST))
    await polls(emu, ACTION, 2)
    assert emu.requests[TOKEN] == 1  # one token serves many polls
    emu.expire_tokens()
    await polls(emu, ACTION, 3)
    assert emu.responses[401] >= 1 and emu.requests[TOKEN] == 2
    emu.trigger()
    await seen.wait_count(1)


async def test_token_is_renewed_before_it_expires(serve, collect):
    emu = AwsEmulator()
    seen = collect(AwsWatcher(await serve(emu), poll_interval=FAST, token_ttl_s=2))
    await wait_until(lambda: emu.requests[TOKEN] >= 3, "two token renewals")
    assert emu.responses[401] == 0  # renewed ahead of expiry, never rejected
    seen.assert_alive()


async def test_imdsv1_is_refused_unless_allowed(serve, collect, caplog):
    emu = AwsEmulator(imdsv2_required=False)
    url = await serve(emu)
    emu.set_token_mode("gone")  # no IMDSv2 here: only IMDSv1 would work
    emu.trigger()
    caplog.set_level(logging.WARNING, "spotrun.notices.aws")
    strict = collect(AwsWatcher(url, poll_interval=FAST))
    await wait_until(lambda: emu.requests[TOKEN] >= 3, "token attempts")
    assert emu.requests[ACTION] == 0  # never asked without a token
    assert strict.notices == []
    assert any("allow_imdsv1" in r.getMessage() for r in caplog.records)
    lenient = collect(AwsWatcher(url, poll_interval=FAST, allow_imdsv1=True))
    [notice] = await lenient.wait_count(1)
    assert notice.action == "terminate"


async def test_token_endpoint_that_hangs_then_returns(serve, collect, caplog):
    emu = AwsEmulator()
    seen = collect(AwsWatcher(await serve(emu), poll_interval=FAST))
    await polls(emu, ACTION, 1)
    caplog.set_level(logging.WARNING, "spotrun.notices.aws")
    emu.set_token_mode("hang")
    emu.expire_tokens()
    await wait_until(lambda: any("no session token" in r.getMessage() for r in caplog.records), "a log line")
    emu.trigger()
    seen.assert_alive()
    assert seen.notices == []
    emu.set_token_mode("ok")
    [notice] = await seen.wait_count(1)
    assert notice.kind is NoticeKind.RECLAIM


async def test_stale_termination_time_is_not_a_notice(serve, collect):
    emu = AwsEmulator()
    seen = collect(AwsWatcher(await serve(emu), poll_interval=FAST))
    emu.trigger(action="terminate", lead_s=-600)
    emu.fail_termination()  # instance-action gone, the past termination-time stays
    await polls(emu, ACTION, 5)
    assert emu.state()["spot/termination-time"] is not None
    assert seen.notices == []


async def test_a_past_deadline_is_still_a_notice(serve, collect):
    emu = AwsEmulator()
    seen = collect(AwsWatcher(await serve(emu), poll_interval=FAST))
    emu.trigger(action="terminate", lead_s=-30)
    [notice] = await seen.wait_count(1)
    assert notice.seconds_left() < 0
