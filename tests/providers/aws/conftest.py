"""The AWS provider's fixtures: a local AWS (moto EC2 + S3, fault proxy, VM runner) per test.

Every endpoint is on 127.0.0.1 and the credentials are moto's dummies, set here; nothing
reaches a real AWS account or 169.254.169.254.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spotrun.controller.db import Database
from spotrun.emulators.local_aws import LocalAws
from spotrun.providers.aws import AwsConfig, AwsProvider
from spotrun.providers.local.procs import instance_pids


@pytest.fixture
def local_aws(tmp_path: Path, spotrun_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalAws]:
    with LocalAws(tmp_path / "aws", regions=("us-east-1",), lead_s=1.0) as aws:
        for key, value in aws.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("SPOTRUN_DB_URL", f"sqlite:///{spotrun_home / 'spotrun.db'}")
        yield aws
        vms = list(aws.runner.vms)
    for ec2_id in vms:
        assert instance_pids(ec2_id) == [], f"{ec2_id} left processes behind"


@pytest.fixture
def provider(local_aws: LocalAws) -> AwsProvider:
    return AwsProvider(AwsConfig.from_env())


@pytest.fixture
def db(local_aws: LocalAws) -> Iterator[Database]:
    database = Database()
    yield database
    database.close()
