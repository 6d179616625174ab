"""The AWS provider's parts that need no cloud: refusal mapping, the boot script, the verdict of
the three witnesses, the spec's cloud fields."""

from __future__ import annotations

import subprocess

import pytest
from botocore.exceptions import ClientError

from spotrun.controller.spec import SpecError, parse_spec
from spotrun.providers.aws import errors, userdata
from spotrun.providers.aws.provider import client_token, region_of
from spotrun.providers.base import InstanceState, LaunchRefused
from spotrun.providers.status import Status, outcome


def client_error(code: str, message: str = "AWS said so") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "RunInstances")


@pytest.mark.parametrize("code", ["InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded",
                                  "InstanceLimitExceeded", "Unsupported"])
def test_refusals_become_launch_refused_with_the_clouds_words(code: str) -> None:
    exc = errors.translate(client_error(code, "the words of EC2"), "us-east-1a")
    assert isinstance(exc, LaunchRefused)
    assert str(exc).startswith(f"{code} in us-east-1a: ") and "(AWS: the words of EC2)" in str(exc)


def test_quota_refusals_name_the_quota_and_bad_requests_are_fatal() -> None:
    assert "L-1216C47A" in str(errors.translate(client_error("InstanceLimitExceeded"), "us-east-1"))
    fatal = errors.translate(client_error("InvalidAMIID.NotFound"), "us-east-1")
    assert isinstance(fatal, ValueError) and "resources.image" in str(fatal)
    other = client_error("InternalError")
    assert errors.translate(other, "us-east-1") is other  # unknown: raised as it came, retried as a failure


def test_client_token_fits_ec2_and_is_stable() -> None:
    assert client_token("job-1-abc") == "job-1-abc"
    long = "j" * 100
    assert len(client_token(long)) == 64 and client_token(long) == client_token(long)
    assert (region_of("us-east-1a"), region_of("eu-west-3c"), region_of("us-east-1")) == ("us-east-1", "eu-west-3", None)


def test_boot_script_is_valid_bash_quotes_everything_and_holds_no_secret() -> None:
    plan = userdata.BootPlan(
        job_id="job-1", attempt=3, run="python train.py --name 'it''s' $HOME", setup="pip install -r req.txt",
        status_store="s3://bucket/prefix", install="pip:spotrun==0.1.0", version="0.1.0",
        workdir_key="workdirs/abc.tar.gz", env={"LR": "0.1; rm -rf /"}, agent_args=("--signal", "SIGTERM"),
    )
    script = userdata.render(plan)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # parses
    assert "export LR='0.1; rm -rf /'" in script
    assert '--job-id job-1 --attempt 3 --status-store s3://bucket/prefix --log-file "$ROOT/boot.log" --signal SIGTERM' in script
    assert "shutdown -h now" in script and "install -q --disable-pip-version-check spotrun==0.1.0" in script
    assert "AWS_SECRET" not in script and "X-Amz-Signature" not in script
    with pytest.raises(ValueError, match="pip:<requirement>"):
        userdata.install_lines("conda:spotrun")


def verdict(cloud: InstanceState, status: Status | None, age: float = 1.0) -> tuple[InstanceState, int | None]:
    out = outcome(cloud, "why", status, launched_at=0.0, now=age, boot_timeout_s=60, stale_after_s=30)
    return out.state, out.returncode


def test_the_agents_word_wins_then_the_clouds_then_silence() -> None:
    beat = Status(beat_at=0.5)
    assert verdict(InstanceState.RUNNING, beat) == (InstanceState.RUNNING, None)
    assert verdict(InstanceState.RUNNING, Status(beat_at=0.5, notice=True)) == (InstanceState.NOTICE, None)
    assert verdict(InstanceState.RECLAIMED, Status(beat_at=0.5, returncode=75)) == (InstanceState.EXITED, 75)
    assert verdict(InstanceState.RECLAIMED, beat) == (InstanceState.RECLAIMED, None)  # no exit record: EC2's reason
    assert verdict(InstanceState.RUNNING, None, age=10) == (InstanceState.PENDING, None)  # still booting
    assert verdict(InstanceState.RUNNING, None, age=61)[0] == InstanceState.UNBOOTED  # never booted: an error, not a reclaim
    assert verdict(InstanceState.RUNNING, Status(beat_at=10), age=41)[0] == InstanceState.GONE  # went silent


def test_spec_cloud_fields() -> None:
    spec = parse_spec({"run": "x", "resources": {"cloud": "aws", "instance_type": ["g5.xlarge", "g6.xlarge"],
                                                   "zones": ["us-east-1a", "us-east-1b"], "disk_gb": 200},
                       "aws": {"iam_instance_profile": "spotrun-node", "subnet_id": {"us-east-1a": "subnet-1"}}})
    assert spec.resources.provider == "aws"
    assert spec.resources.placements() == [("us-east-1a", "g5.xlarge"), ("us-east-1b", "g5.xlarge"),
                                           ("us-east-1a", "g6.xlarge"), ("us-east-1b", "g6.xlarge")]
    assert spec.cloud_settings("us-east-1a") == {"disk_gb": 200, "places": ["us-east-1a", "us-east-1b"], "aws": {
        "subnet_id": {"us-east-1a": "subnet-1"}, "security_group_ids": [], "iam_instance_profile": "spotrun-node"}}
    regions = parse_spec({"run": "x", "resources": {"cloud": "aws", "regions": ["us-east-1", "us-west-2"]}})
    assert regions.resources.placements() == [("us-east-1", None), ("us-west-2", None)]
    with pytest.raises(SpecError, match="disagree"):
        parse_spec({"run": "x", "resources": {"cloud": "aws", "provider": "local"}})
    with pytest.raises(SpecError, match="greater than or equal to 8"):
        parse_spec({"run": "x", "resources": {"cloud": "aws", "disk_gb": 2}})


def test_wheelhouse_install_fetches_one_tar_with_the_standard_library() -> None:
    lines = userdata.install_lines("wheelhouse:/w", "http://127.0.0.1:9/b/wheelhouses/x.tar?X-Amz-Signature=abc")
    subprocess.run(["bash", "-n"], input=lines, text=True, check=True)
    assert "'http://127.0.0.1:9/b/wheelhouses/x.tar?X-Amz-Signature=abc'" in lines
    assert '--no-index --find-links "$ROOT/wheels" spotrun' in lines and "import boto3" not in lines
    with pytest.raises(ValueError, match="wheelhouse:<dir>"):
        userdata.install_lines("wheelhouse:/w")  # no URL: the provider must sign one


def test_an_aws_job_without_a_store_is_refused_at_submission(monkeypatch: pytest.MonkeyPatch) -> None:
    from spotrun.controller.api import prepare_spec

    monkeypatch.delenv("SPOTRUN_AWS_STORE", raising=False)
    with pytest.raises(SpecError, match="SPOTRUN_AWS_STORE=s3://bucket/prefix"):
        prepare_spec({"run": "x", "resources": {"cloud": "aws"}})
    monkeypatch.setenv("SPOTRUN_AWS_STORE", "s3://bucket/runs")
    with pytest.raises(SpecError, match="instances cannot reach file://"):
        prepare_spec({"run": "x", "resources": {"cloud": "aws"}, "checkpoint": {"store": "file:///tmp/x"}})
    assert prepare_spec({"run": "x", "resources": {"cloud": "aws"}}).resources.provider == "aws"
