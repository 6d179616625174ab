"""The AWS provider: one EC2 instance per attempt, booted by its user data (docs/aws.md)."""

from spotrun.providers.aws.config import AwsConfig
from spotrun.providers.aws.provider import AwsProvider

__all__ = ["AwsConfig", "AwsProvider"]
