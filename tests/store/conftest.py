"""Store fixtures: a real moto S3 server on 127.0.0.1 (one per session) and per-test store URLs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import BUCKET, s3_url, start_moto

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """Fake credentials, valid only for the local moto servers; restored afterwards."""
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    yield dict(S3_ENV)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_endpoint(s3_env: dict[str, str]) -> Iterator[str]:
    """A moto S3 server with one bucket, shared by the session."""
    import boto3

    server, endpoint = start_moto()
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a local directory and against S3 (moto) at a fresh prefix."""
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    return s3_url(request.getfixturevalue("s3_endpoint"))
