"""Every watcher against a server that misbehaves: never a false notice, never a crash,
a log line, and the real notice still heard once the server behaves again."""

from __future__ import annotations

import json
import logging

import pytest

from spotrun.notices.alibaba import AlibabaWatcher
from spotrun.notices.aws import AwsWatcher
from spotrun.notices.azure import AzureWatcher
from spotrun.notices.base import Notice, NoticeKind, Watcher
from spotrun.notices.eci import EciWatcher
from spotrun.notices.gcp import GcpWatcher

from .conftest import FAST
from .helpers import Collector, wait_until
from .rawserver import TRICKLE, RawServer, http

WHEN = "2030-01-01T00:00:00Z"
AZURE_EVENT = {
    "DocumentIncarnation": 2,
    "Events": [
        {
            "EventId": "E-1",
            "EventStatus": "Scheduled",
            "EventType": "Preempt",
            "ResourceType": "VirtualMachine",
            "Resources": ["vm"],
            "NotBefore": "Tue, 01 Jan 2030 00:00:00 GMT",
        }
    ],
}


def good(cloud: str, method: str, target: str) -> bytes:
    """A well-formed answer with a reclaim notice in it."""
    if cloud == "aws":
        if method == "PUT":
            return http(200, "token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        if "instance-action" in target:
            return http(200, json.dumps({"action": "terminate", "time": WHEN}))
        return http(404)
    if cloud == "gcp":
        value = "TRUE" if "preempted" in target else "NONE"
        return http(200, value, {"ETag": f"tag-{value}", "Metadata-Flavor": "Google"})
    if cloud == "azure":
        return http(200, json.dumps(AZURE_EVENT), {"Content-Type": "application/json"})
    if method == "PUT":
        return http(404)
    return http(200, WHEN)  # alibaba, eci


WRONG_TYPE = {
    "aws": json.dumps({"action": 5, "time": ["soon"]}),
    "gcp": "MAYBE",
    "azure": json.dumps({"DocumentIncarnation": "x", "Events": "none"}),
    "alibaba": "[1, 2, 3]",
    "eci": '{"time": null}',
}


def bad(cloud: str, mode: str) -> bytes | None:
    if mode == "garbage":
        return http(200, b"\x89PNG\x00\xff{{{<html>", {"ETag": "g"})
    if mode == "truncated":  # promises 500 bytes, sends 9, hangs up
        return b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{\"action\""
    if mode == "server-error":
        return http(500, "internal error")
    if mode == "wrong-type":
        return http(200, WRONG_TYPE[cloud], {"ETag": "w", "Metadata-Flavor": "Google"})
    return None  # "hangs"


def watcher_for(cloud: str, url: str) -> Watcher:
    if cloud == "aws":
        return AwsWatcher(url, poll_interval=FAST)
    if cloud == "gcp":
        return GcpWatcher(url, hang_s=1)
    if cloud == "azure":
        return AzureWatcher(url, vm_name="vm", poll_interval=FAST)
    if cloud == "alibaba":
        return AlibabaWatcher(url, poll_interval=FAST)
    return EciWatcher(url, poll_interval=FAST)


@pytest.mark.parametrize("mode", ["garbage", "truncated", "server-error", "wrong-type", "hangs"])
@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure", "alibaba", "eci"])
async def test_watcher_survives_a_misbehaving_server(cloud, mode, tmp_path, caplog):
    behaving = False

    def respond(method: str, target: str) -> bytes | None:
        return good(cloud, method, target) if behaving else bad(cloud, mode)

    server = RawServer(respond)
    url = await server.start(str(tmp_path / "agent.sock") if cloud == "eci" else None)
    caplog.set_level(logging.WARNING, f"spotrun.notices.{cloud}")
    seen = Collector(watcher_for(cloud, url))
    try:
        await wait_until(lambda: server.requests >= 2, "two misbehaving answers")
        await wait_until(
            lambda: any(r.name == f"spotrun.notices.{cloud}" for r in caplog.records), "a log line"
        )
        seen.assert_alive()
        assert seen.notices == []  # nothing untrustworthy became a notice
        behaving = True
        [notice] = await seen.wait_count(1)
        assert (notice.provider, notice.kind) == (cloud, NoticeKind.RECLAIM)
    finally:
        await seen.close()
        await server.stop()


NOTICE_PATH = {"aws": "instance-action", "gcp": "preempted", "azure": "scheduledevents",
               "alibaba": "termination-time", "eci": "spot_termination_time"}


async def notice_after(cloud: str, tmp_path, first: bytes) -> Notice:  # type: ignore[no-untyped-def]
    """The notice a watcher yields when its first notice request is answered `first` and every
    later one well."""
    answered: list[str] = []

    def respond(method: str, target: str) -> bytes | None:
        if NOTICE_PATH[cloud] in target and not answered:
            answered.append(target)
            return first
        return good(cloud, method, target)

    server = RawServer(respond)
    url = await server.start(str(tmp_path / "agent.sock") if cloud == "eci" else None)
    seen = Collector(watcher_for(cloud, url))
    try:
        [notice] = await seen.wait_count(1)
        assert answered and (notice.provider, notice.kind) == (cloud, NoticeKind.RECLAIM)
        return notice
    finally:
        await seen.close()
        await server.stop()


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure", "alibaba", "eci"])
async def test_a_trickling_endpoint_does_not_silence_notices(cloud, tmp_path, caplog):
    """The first notice request is answered a byte every 0.2 s, forever: only an overall
    deadline on the poll (not httpx's per-read timeout) lets the watcher ask again."""
    caplog.set_level(logging.WARNING, f"spotrun.notices.{cloud}")
    await notice_after(cloud, tmp_path, TRICKLE)
    assert any("no complete answer" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("cloud", "first"),
    [
        ("aws", http(200, json.dumps({"action": "terminate", "time": "9999-01-01T00:00:00Z"}))),
        ("alibaba", http(200, "1970-01-01T00:00:00Z")),
        ("eci", http(200, "2999-12-31T23:59:59+00:00")),
        # adopted, 2.0 would equal the real document's 2 and hide its Preempt for good
        ("azure", http(200, json.dumps({"DocumentIncarnation": 2.0, "Events": []}))),
        ("azure", http(200, json.dumps({**AZURE_EVENT, "Events": [{**AZURE_EVENT["Events"][0], "NotBefore": "soon"}]}))),
        ("gcp", http(200, "TRUE", {"ETag": "<script>", "Metadata-Flavor": "Google"})),
    ],
    ids=["aws-time", "alibaba-time", "eci-time", "azure-incarnation", "azure-notbefore", "gcp-etag"],
)
async def test_a_bad_field_is_never_adopted(cloud, first, tmp_path):
    """A well-formed answer with one field the cloud never sends: not a notice, asked again,
    and the real answer after it is heard with its own values."""
    notice = await notice_after(cloud, tmp_path, first)
    if cloud != "gcp":  # GCP's notice carries no time of its own
        assert notice.deadline is not None and notice.deadline.isoformat() == "2030-01-01T00:00:00+00:00"
