"""The AWS provider's own settings (where its store is, how instances get spotrun), apart from
what each job asks for (region, zones, image, network: `LaunchRequest.cloud`).

From the environment, so a controller needs no file: `SPOTRUN_AWS_STORE` (required, an
`s3://bucket/prefix` the instances can read and write: workdirs, status records, and the
default checkpoint store), `SPOTRUN_AWS_REGION` (else `AWS_DEFAULT_REGION`, else us-east-1),
`SPOTRUN_AWS_INSTALL`, `SPOTRUN_AWS_IMAGE`, `SPOTRUN_AWS_INSTANCE_TYPE`. Endpoints follow
boto3's own `AWS_ENDPOINT_URL` (moto in tests). Credentials come from boto3's usual chain and
are never written anywhere by spotrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from spotrun import __version__

# Ubuntu 24.04 LTS has Python 3.12 (spotrun needs 3.11+); Canonical keeps this public
# parameter current in every region.
DEFAULT_IMAGE = "ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
DEFAULT_INSTANCE_TYPE = "m5.large"


@dataclass(frozen=True)
class AwsConfig:
    store: str
    region: str = "us-east-1"
    install: str = f"pip:spotrun=={__version__}"
    image: str = DEFAULT_IMAGE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    boot_timeout_s: float = 600.0  # no first heartbeat by then: the instance never booted
    stale_after_s: float = 90.0  # heartbeat this old: the instance is lost
    heartbeat_s: float = 5.0
    regions: tuple[str, ...] = ()  # more regions to watch for leaks (launch regions join by use)

    @classmethod
    def from_env(cls) -> AwsConfig:
        store = os.environ.get("SPOTRUN_AWS_STORE", "")
        if not store.startswith("s3://"):
            raise ValueError(
                "the aws provider needs SPOTRUN_AWS_STORE=s3://bucket/prefix (a bucket its instances "
                "can read and write; see docs/aws.md)"
            )
        env = os.environ.get
        return cls(
            store=store,
            region=env("SPOTRUN_AWS_REGION") or env("AWS_DEFAULT_REGION") or cls.region,
            install=env("SPOTRUN_AWS_INSTALL") or cls.install,
            image=env("SPOTRUN_AWS_IMAGE") or cls.image,
            instance_type=env("SPOTRUN_AWS_INSTANCE_TYPE") or cls.instance_type,
        )
