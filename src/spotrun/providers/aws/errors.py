"""EC2's error codes, mapped once: which are refusals (try elsewhere), which are the user's to fix.

A refusal becomes `LaunchRefused` carrying the cloud's own words, so the job's timeline says
what AWS said; the controller then moves to the next zone, region or on-demand. A request that
can never succeed (an AMI that does not exist, no permission) becomes `ValueError` with what to
do, which fails the job at once instead of retrying it forever. Throttling
(`RequestLimitExceeded`) is botocore's to retry, with backoff; the client token keeps a retried
launch from starting a second instance.
"""

from __future__ import annotations

from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from spotrun.providers.base import LaunchRefused

# code -> what it means for the user; the message AWS sent is appended.
REFUSALS = {
    "InsufficientInstanceCapacity": "AWS has no capacity for this instance type in this zone right now",
    "InsufficientHostCapacity": "AWS has no capacity for this instance type in this zone right now",
    "SpotMaxPriceTooLow": "the spot price is above your max_price",
    "MaxSpotInstanceCountExceeded": (
        "the account's spot quota is used up; raise 'All Standard (A, C, D, H, I, M, R, T, Z) Spot "
        "Instance Requests' (L-34B43A08, or the G/VT or P quota for GPU types) in Service Quotas"
    ),
    "InstanceLimitExceeded": (
        "the account's on-demand quota is used up; raise 'Running On-Demand Standard (A, C, D, H, I, "
        "M, R, T, Z) instances' (L-1216C47A, or the G/VT or P quota for GPU types) in Service Quotas"
    ),
    "VcpuLimitExceeded": (
        "the account's vCPU quota for this instance family is used up; raise it in Service Quotas"
    ),
    "Unsupported": "this instance type or market is not offered in this zone",
    "InsufficientFreeAddressesInSubnet": "the subnet has no free IP address",
}

# code -> what to fix; retrying cannot help.
FATAL = {
    "InvalidAMIID.NotFound": "the image does not exist in this region: set resources.image to an AMI of the region",
    "InvalidAMIID.Malformed": "resources.image is not an AMI id (ami-...) nor ssm:/parameter/path",
    "InvalidSubnetID.NotFound": "aws.subnet_id does not exist in this region",
    "InvalidGroup.NotFound": "an aws.security_group_ids entry does not exist in this region",
    "InvalidKeyPair.NotFound": "aws.key_name does not exist in this region",
    "InvalidParameterValue": "a launch parameter was refused",
    "InvalidParameterCombination": "a launch parameter combination was refused",
    "UnauthorizedOperation": "the credentials may not do this: attach the policy in docs/aws.md",
    "AuthFailure": "the AWS credentials were refused: check AWS_PROFILE / AWS_ACCESS_KEY_ID",
    "InvalidClientTokenId": "the AWS credentials were refused: check AWS_PROFILE / AWS_ACCESS_KEY_ID",
    "OptInRequired": "the account is not subscribed to this region or image",
    "ParameterNotFound": "the SSM parameter named by resources.image does not exist in this region",
}


def code_of(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def translate(exc: Exception, where: str) -> Exception:
    """The exception the controller should see for an EC2 failure at `where` (a zone, region)."""
    if isinstance(exc, NoCredentialsError):
        return ValueError("no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run on a role")
    if isinstance(exc, NoRegionError):
        return ValueError("no AWS region: set resources.region or AWS_DEFAULT_REGION")
    if not isinstance(exc, ClientError):
        return exc
    code = code_of(exc)
    said = exc.response.get("Error", {}).get("Message", "")
    if code in REFUSALS:
        return LaunchRefused(f"{code} in {where}: {REFUSALS[code]} (AWS: {said})")
    if code in FATAL:
        return ValueError(f"{code} in {where}: {FATAL[code]} (AWS: {said})")
    return exc
