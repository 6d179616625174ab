"""Jobs on the AWS provider end to end: real controller, real user data, real agent, moto's EC2/S3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3

from spotrun.controller import repo
from spotrun.controller.api import read_attempt_log
from spotrun.controller.db import Database
from spotrun.controller.demo import read_progress
from spotrun.emulators.local_aws import LocalAws
from spotrun.providers.aws import AwsProvider
from spotrun.providers.base import InstanceState
from spotrun.sdk.events import EVENTS_ENV

from tests.controller.helpers import async_wait_until, wait_until
from tests.controller.test_reconciler import live_instance, submit, view, wait_status
from tests.providers.conftest import crash_at_each_point, reclaimed_three_times

TRAIN = Path(__file__).resolve().parents[3] / "examples" / "train.py"
ZONES = ["us-east-1a", "us-east-1b"]


def ec2_instances(**filters: list[str]) -> list[dict]:
    """What moto holds, asked directly (not through the provider under test)."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    found = ec2.describe_instances(Filters=[{"Name": k, "Values": v} for k, v in filters.items()])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def train_job(out: Path, name: str, steps: int, step_time: float, **resources: object) -> dict:
    return {
        "name": name,
        "run": f"{sys.executable} {TRAIN} --steps {steps} --step-time {step_time} --every 5 --output {out / name}.json",
        "resources": {"cloud": "aws", "instance_type": "m5.large", **resources},
        "recovery": {"max_reclaims": 10, "backoff": {"base": "50ms", "max": "500ms"}},
        "env": {EVENTS_ENV: str(out / f"{name}.events.jsonl")},
        "checkpoint": {"dir": "checkpoints", "sync_interval": "1s"},
    }


async def test_three_reclaims_across_two_zones_end_like_an_uninterrupted_run(
    tmp_path: Path, db: Database, local_aws: LocalAws, reconciler: object
) -> None:
    local_aws.proxy.spot_prices.update({("m5.large", "us-east-1a"): 0.041, ("m5.large", "us-east-1b"): 0.029})
    job = submit(train_job(tmp_path, "hit", 80, 0.05, zones=ZONES))
    final = await reclaimed_three_times(db, tmp_path, job, "hit", 80, lambda instance: local_aws.reclaim(instance, lead_s=1.0))
    attempts = final["attempt_list"]
    assert [a["cause"] for a in attempts] == ["reclaim", "reclaim", "reclaim", "success"]
    assert [a["zone"] for a in attempts] == ZONES * 2
    # 75: the agent saved work and said so; None: the deadline came first, EC2's reason told it.
    assert {a["exit_status"] for a in attempts[:3]} <= {75, None}
    # Cost: each attempt priced at its own zone's spot price, charged for its run time.
    assert [a["price"] for a in attempts] == [0.041, 0.029] * 2
    assert final["cost"] > 0 and final["on_demand_cost"] > final["cost"]
    assert len(local_aws.runner.reclaims) == 3
    # Each attempt's log was shipped by its agent to the store and kept by the controller,
    # though its machine is gone: the boot, and for the last one the job's own output.
    assert all("[spotrun boot]" in repo.kept_log(job, n).read_text() for n in (1, 2, 3, 4))
    assert "starting at step" in repo.kept_log(job, 4).read_text()
    # Every instance is gone from EC2's point of view: none left running or billed.
    assert {i["State"]["Name"] for i in ec2_instances(**{"tag:spotrun:job": [job]})} == {"terminated"}


async def test_capacity_refusals_move_to_the_next_zone_then_on_demand(
    db: Database, local_aws: LocalAws, reconciler: object
) -> None:
    local_aws.proxy.refuse("InsufficientInstanceCapacity", zone="us-east-1a", spot=True)
    moved = submit({"run": "echo moved", "resources": {"cloud": "aws", "zones": ZONES}})
    final = await wait_status(db, moved, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    assert [(a["zone"], a["spot"], a["cause"]) for a in final["attempt_list"]] == [
        ("us-east-1a", True, "refused"), ("us-east-1b", True, "success")]
    refused = next(e["message"] for e in final["events"] if e["kind"] == "refused")
    assert "InsufficientInstanceCapacity in us-east-1a" in refused and "We currently do not have sufficient" in refused

    local_aws.proxy.refuse("MaxSpotInstanceCountExceeded", zone="us-east-1b", spot=True)
    auto = submit({"run": "echo on-demand", "resources": {"cloud": "aws", "zones": ZONES, "spot": "auto"},
                   "recovery": {"backoff": {"base": "50ms", "max": "200ms"}}})
    final = await wait_status(db, auto, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    capacity = [(a["zone"], a["spot"], a["cause"]) for a in final["attempt_list"]]
    assert capacity == [("us-east-1a", True, "refused"), ("us-east-1b", True, "refused"),
                        ("us-east-1a", True, "refused"), ("us-east-1b", False, "success")]
    assert any("L-34B43A08" in e["message"] for e in final["events"])  # the quota to raise
    launched = ec2_instances(**{"tag:spotrun:job": [auto]})
    assert len(launched) == 1 and "InstanceLifecycle" not in launched[0]  # on-demand


async def test_cancel_terminates_the_instance(db: Database, local_aws: LocalAws, reconciler: object) -> None:
    job = submit({"run": "echo hello from the instance; sleep 600", "resources": {"cloud": "aws"}})
    await wait_status(db, job, "RUNNING")
    instance = live_instance(db, job)
    # While someone reads it (`spotrun logs -f`), the running attempt's log is copied from the
    # store every pass, not only once the attempt has ended.
    with db.session() as s:
        log_path = repo.attempts_of(s, job)[0].instance_log
    await async_wait_until(lambda: "hello from the instance" in read_attempt_log(job, 1, log_path),
                           what="the live log of the running attempt")
    repo.request_cancel(db, job)
    await wait_status(db, job, "CANCELLED")
    ec2_id = instance.rpartition(":")[2]
    assert ec2_instances(**{"instance-id": [ec2_id]})[0]["State"]["Name"] == "terminated"
    await async_wait_until(lambda: local_aws.runner.vms[ec2_id].ended is not None, what="the VM to stop")


async def test_bad_input_fails_before_any_instance_starts(db: Database, local_aws: LocalAws, reconciler: object) -> None:
    bad_type = submit({"run": "true", "resources": {"cloud": "aws", "instance_type": "m5.galactic"}})
    bad_image = submit({"run": "true", "resources": {"cloud": "aws", "image": "ami-00000000deadbeef0"}})
    # The unknown zone is the job's second: caught at the first launch, not after a reclaim.
    bad_zone = submit({"run": "true", "resources": {"cloud": "aws", "zones": ["us-east-1a", "us-east-1q"]}})
    bad_region = submit({"run": "true", "resources": {"cloud": "aws", "region": "us-middle-7"}})
    for job, words in ((bad_type, "m5.galactic"), (bad_image, "ami-00000000deadbeef0"),
                       (bad_zone, "zone 'us-east-1q' does not exist in us-east-1 (its zones: us-east-1a,"),
                       (bad_region, "'us-middle-7' is not an AWS region or zone")):
        final = await wait_status(db, job, "FAILED")
        assert words in final["reason"] and "\n" not in final["reason"]
    assert ec2_instances() == []
    # Checked once per provider: one DescribeRegions, one DescribeAvailabilityZones for us-east-1.
    assert local_aws.proxy.calls["DescribeRegions"] == 1
    assert local_aws.proxy.calls["DescribeAvailabilityZones"] == 1


async def test_throttled_launch_is_retried_without_a_second_instance(
    db: Database, local_aws: LocalAws, provider: AwsProvider, reconciler: object
) -> None:
    local_aws.proxy.refuse("RequestLimitExceeded", times=2)
    job = submit({"run": "echo fine", "resources": {"cloud": "aws"}})
    final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    assert local_aws.proxy.refused["RequestLimitExceeded:"] == 2
    assert provider.calls["RunInstances"] == 1  # one call; botocore retried it on the wire
    assert local_aws.proxy.calls["RunInstances"] == 3
    assert len(ec2_instances(**{"tag:spotrun:job": [job]})) == 1


async def test_a_reclaim_without_the_agents_word_is_still_a_reclaim(
    db: Database, local_aws: LocalAws, provider: AwsProvider, reconciler: object
) -> None:
    job = submit({"run": "sleep 600", "resources": {"cloud": "aws"}, "recovery": {"backoff": {"base": "50ms", "max": "100ms"}}})
    await wait_status(db, job, "RUNNING")
    instance = live_instance(db, job)
    vm = local_aws.runner.vms[instance.rpartition(":")[2]]
    local_aws.call(vm.emulator.stop())  # the notice endpoint goes silent: the agent hears nothing
    local_aws.reclaim(instance, lead_s=0.0)
    await async_wait_until(lambda: view(db, job)["reclaims"] == 1, what="the reclaim to be seen")
    seen = await provider.query(instance)
    assert seen.state == InstanceState.RECLAIMED
    repo.request_cancel(db, job)
    await wait_status(db, job, "CANCELLED")


async def test_a_store_outage_during_a_reclaim_loses_no_job_and_starts_no_second_instance(
    tmp_path: Path, db: Database, local_aws: LocalAws, reconciler: object
) -> None:
    steps = 60
    job = submit(train_job(tmp_path, "outage", steps, 0.05))
    await async_wait_until(lambda: read_progress(tmp_path, "outage").step >= 15, what="progress to be checkpointed")
    first = live_instance(db, job)
    local_aws.store_outage(True)  # status records and checkpoints unreachable from here on
    local_aws.reclaim(first, lead_s=1.0)
    # Neither the agent's notice nor its exit record can reach the store: EC2's state tells.
    await async_wait_until(lambda: view(db, job)["reclaims"] == 1, what="the reclaim recorded from EC2's state")
    local_aws.store_outage(False)
    assert local_aws.s3.dropped > 0  # the agent or the controller did try the store meanwhile
    final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    attempts = final["attempt_list"]
    assert attempts[0]["cause"] == "reclaim" and attempts[0]["exit_status"] is None  # no exit record came
    assert attempts[-1]["cause"] == "success"

    plain = tmp_path / "plain.json"
    subprocess.run([sys.executable, str(TRAIN), "--steps", str(steps), "--output", str(plain)], check=True,
                   capture_output=True, cwd=tmp_path)
    assert json.loads((tmp_path / "outage.json").read_text())["weights_sha256"] == json.loads(plain.read_text())["weights_sha256"]
    # One instance per attempt, every one of them ended.
    launched = ec2_instances(**{"tag:spotrun:job": [job]})
    tokens = [t["Value"] for i in launched for t in i["Tags"] if t["Key"] == "spotrun:token"]
    assert len(tokens) == len(set(tokens)) == len(attempts)
    assert {i["State"]["Name"] for i in launched} == {"terminated"}


def test_controller_killed_between_run_instances_and_its_record(
    local_aws: LocalAws, controller_process: object, spotrun_home: Path
) -> None:
    db = Database()
    try:
        for point, job, final in crash_at_each_point(controller_process, db, {  # type: ignore[arg-type]
                "run": "echo survived", "resources": {"cloud": "aws"}}):
            launched = ec2_instances(**{"tag:spotrun:job": [job]})
            tokens = [t["Value"] for i in launched for t in i["Tags"] if t["Key"] == "spotrun:token"]
            assert len(tokens) == len(set(tokens)) == len([a for a in final["attempt_list"] if a["cause"] != "refused"])
            wait_until(lambda: {i["State"]["Name"] for i in ec2_instances(**{"tag:spotrun:job": [job]})} == {"terminated"},
                       what=f"{point}: every instance terminated")
    finally:
        db.close()


async def test_an_instance_that_never_boots_is_terminated_and_relaunched(tmp_path: Path, local_aws: LocalAws) -> None:
    import asyncio
    import dataclasses
    import random

    from spotrun.controller.reconciler import Reconciler
    from spotrun.providers.aws import AwsConfig

    hang = tmp_path / "python-that-hangs"
    hang.write_text("#!/bin/sh\nexec sleep 600\n")
    hang.chmod(0o755)
    provider = AwsProvider(dataclasses.replace(AwsConfig.from_env(), boot_timeout_s=3.0))
    db = Database()
    r = Reconciler(db, {"aws": provider}, interval=0.2, rng=random.Random(0))
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    try:
        job = submit({"run": "true", "resources": {"cloud": "aws"}, "aws": {"install": f"python:{hang}"},
                      "recovery": {"max_errors": 1, "backoff": {"base": "50ms", "max": "100ms"}}})
        final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    finally:
        stop.set()
        await task
        db.close()
    # The image, not the cloud: counted against the error budget, never as a reclaim.
    assert final["status"] == "FAILED" and [a["cause"] for a in final["attempt_list"]] == ["error", "error"]
    assert sum("never booted" in e["message"] for e in final["events"] if e["kind"] == "error") == 2
    assert {i["State"]["Name"] for i in ec2_instances(**{"tag:spotrun:job": [job]})} == {"terminated"}
    await async_wait_until(lambda: all(vm.ended for vm in local_aws.runner.vms.values()), what="the VMs to stop")


async def test_missing_credentials_fail_in_one_line(tmp_path: Path, local_aws: LocalAws, monkeypatch: object) -> None:
    import pytest

    from spotrun.emulators.local_aws import DUMMY_CREDENTIALS
    from spotrun.providers.aws import AwsConfig
    from spotrun.providers.base import LaunchRequest

    for key in DUMMY_CREDENTIALS:
        monkeypatch.delenv(key)  # type: ignore[attr-defined]
    for key in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(key, str(tmp_path / "none"))  # type: ignore[attr-defined]
    provider = AwsProvider(AwsConfig.from_env())  # AWS_EC2_METADATA_DISABLED: no instance role either
    with pytest.raises(ValueError, match="^no AWS credentials found: set AWS_PROFILE"):
        await provider.launch(LaunchRequest(token="t", job_id="j", attempt=1, run="true"))
    assert local_aws.proxy.calls == {}  # refused before any request left this machine
