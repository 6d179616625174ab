"""`AwsProvider`: each attempt is one EC2 instance whose user data boots the agent.

Shaped like SkyPilot's `sky/provision/aws`: instances are found by their `spotrun:*` tags,
never by a list kept in memory, so a restarted controller sees everything the last one
started. A launch looks for the attempt's token among the tags first and passes it as the
`ClientToken`, so a launch repeated after a crash (or a retried API call) returns the same
instance. Every observation in one reconciler pass shares one `describe_instances` per region
and one LIST of the status records (`providers/status.py`), whatever the number of jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
import tarfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from spotrun import __version__
from spotrun.providers.aws import errors, userdata
from spotrun.providers.aws.config import AwsConfig
from spotrun.providers.aws.prices import SpotPrices, on_demand
from spotrun.providers.base import ENDED, Instance, InstanceState, LaunchRequest
from spotrun.providers.listing import SharedListing
from spotrun.providers.status import Status, StatusReader, outcome, watched

log = logging.getLogger("spotrun.aws")

TAG_JOB, TAG_ATTEMPT, TAG_TOKEN, TAG_PRICE = "spotrun:job", "spotrun:attempt", "spotrun:token", "spotrun:price"
TAG_OWNER = "spotrun:owner"  # LaunchRequest.owner: the database whose controller may terminate it
WHEELHOUSE_URL_S = 6 * 3600  # a launch's boot script is used within minutes; a relaunch signs anew
STATUS_RETRY_S = 2.0
FLEET_TTL_S = 1.0  # observations this close share one describe: one per pass at the default 1 s interval, at most one a second
_ZONE = re.compile(r"^([a-z]{2}(-gov)?-[a-z]+-\d+)[a-z]$")

# EC2's own reason codes for an instance that is going or gone.
RECLAIM_REASON = "Server.SpotInstanceTermination"
OUR_STOP_REASON = "Client.UserInitiatedShutdown"
POWER_OFF_REASON = "Client.InstanceInitiatedShutdown"


def region_of(zone: str) -> str | None:
    """`us-east-1a` -> `us-east-1`; None for a region name."""
    match = _ZONE.match(zone)
    return match.group(1) if match else None


def _tar(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in files:
            tar.add(path, arcname=path.name)
    return buf.getvalue()


def _store_for_user_data(secrets: dict[str, str]) -> str | None:
    """The job's store URL, the one value of `LaunchRequest.secrets` user data may carry: anything
    on the instance can read user data (IMDS), so a credential must never be in it."""
    from spotrun.redact import url_secrets

    extra = sorted(set(secrets) - {"SPOTRUN_STORE"})
    if extra:
        raise ValueError(f"secrets {', '.join(extra)}: the aws provider cannot hand secrets to an instance yet "
                         "(user data is readable on the machine); give the instance an IAM role that reads them instead")
    store = secrets.get("SPOTRUN_STORE")
    if store and url_secrets(store):
        raise ValueError("checkpoint.store carries credentials in its URL: on aws the instance reads the store "
                         "with its IAM instance profile, so drop them from the URL")
    return store


def client_token(token: str) -> str:
    """EC2 takes 64 ASCII characters at most; the attempt's token may be longer."""
    return token if len(token) <= 64 else hashlib.sha256(token.encode()).hexdigest()


class AwsProvider:
    name = "aws"

    def __init__(self, config: AwsConfig, session: Any = None) -> None:
        import boto3

        self.config = config
        self.session = session or boto3.session.Session()
        self.calls: Counter[str] = Counter()  # EC2 API calls by operation, for benchmarks
        self._clients: dict[tuple[str, str], Any] = {}
        self._regions = {config.region, *config.regions}
        self._fleet = SharedListing(self._observe, FLEET_TTL_S)
        from spotrun.store.backend import Backend

        # A pass reads the status records with a short retry budget: while the store is out the
        # pass judges by EC2's state and the next one reads again, rather than waiting out the
        # outage. Uploads (workdir, wheelhouse) keep the store's usual patience.
        self._status = StatusReader(config.store, retry_timeout_s=STATUS_RETRY_S)
        self._store = Backend(config.store, create=True)
        self._spot_prices = SpotPrices()
        self._checked: set[tuple] = set()
        self._known_regions: set[str] | None = None  # DescribeRegions, once
        self._zones: dict[str, set[str]] = {}  # region -> its zones, DescribeAvailabilityZones once each
        self._places_lock = asyncio.Lock()  # concurrent first launches share one look
        self._images: dict[tuple[str, str], tuple[str, str]] = {}  # (region, image) -> (ami, root device)
        self._ended_seen: dict[str, float] = {}
        self._wheelhouses: dict[str, str] = {}  # folder -> its tar's key in the store
        self._terminated: set[str] = set()  # seen `terminated` in EC2: final, nothing left to stop
        self._logged: set[str] = set()  # instances whose log, shipped by the agent to the store, is kept

    @property
    def store_url(self) -> str:
        """Where jobs keep checkpoints unless they name a store: one an instance can reach."""
        return self.config.store

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._clients:
            from botocore.config import Config

            # botocore retries throttling (RequestLimitExceeded) and 5xx with backoff; the client
            # token makes a retried RunInstances return the first one's instance. Two retries: EC2
            # sends InsufficientInstanceCapacity as a 500 too, and the next zone beats a long wait.
            cfg = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30)
            c = self.session.client(service, region_name=region, config=cfg)
            if service == "ec2":
                c.meta.events.register("before-call.ec2", self._count)
            self._clients[key] = c
        return self._clients[key]

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    async def _ec2(self, region: str, op: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.client("ec2", region), op), **kwargs)

    # --- launch --------------------------------------------------------------------------

    def _placement(self, request: LaunchRequest) -> tuple[str, str | None]:
        """(region, zone): a `zones` entry that is a region name means any zone of it."""
        zone = request.zone
        region = (region_of(zone) if zone else None) or zone or request.cloud.get("region") or self.config.region
        return region, zone if zone and region_of(zone) else None

    async def launch(self, request: LaunchRequest) -> Instance:
        region, zone = self._placement(request)
        itype = request.instance_type or self.config.instance_type
        where = zone or region
        try:
            await self._check_places([where, *request.cloud.get("places", ())])
            self._regions.add(region)
            found = await self._by_token(region, request.token)
            if found is not None:  # launched before a crash: the same instance, not a second one
                return found
            ami, root_device = await self._preflight(region, itype, request.cloud.get("image") or self.config.image)
            spot_price, od_price = self.prices(itype, where)
            args = self._run_args(request, region, zone, itype, ami, root_device)
            args["UserData"] = userdata.render(await self._boot_plan(request))
            args["TagSpecifications"][0]["Tags"].append(
                {"Key": TAG_PRICE, "Value": f"{spot_price if request.spot else od_price:.6f}"}
            )
            raw = (await self._ec2(region, "run_instances", **args))["Instances"][0]
        except Exception as exc:
            raise errors.translate(exc, where) from None
        self._fleet.forget()
        log.info("launched %s for %s attempt %d in %s", raw["InstanceId"], request.job_id, request.attempt, where)
        return self._to_instance(region, raw, {})

    async def _by_token(self, region: str, token: str) -> Instance | None:
        pages = await self._describe(region, [{"Name": f"tag:{TAG_TOKEN}", "Values": [token]}])
        live = [i for i in pages if i["State"]["Name"] != "terminated"] or pages
        return self._to_instance(region, live[0], {}) if live else None

    def _run_args(self, request: LaunchRequest, region: str, zone: str | None, itype: str, ami: str,
                  root_device: str) -> dict[str, Any]:
        tags = [
            {"Key": TAG_JOB, "Value": request.job_id},
            {"Key": TAG_ATTEMPT, "Value": str(request.attempt)},
            {"Key": TAG_TOKEN, "Value": request.token},
            *([{"Key": TAG_OWNER, "Value": request.owner}] if request.owner else []),
            {"Key": "Name", "Value": f"spotrun-{request.job_id}-{request.attempt}"},
        ]
        args: dict[str, Any] = {
            "ImageId": ami, "InstanceType": itype, "MinCount": 1, "MaxCount": 1,
            "ClientToken": client_token(request.token),
            "InstanceInitiatedShutdownBehavior": "terminate",  # the agent's power-off ends the bill
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": list(tags)}],
        }
        if zone:
            args["Placement"] = {"AvailabilityZone": zone}
        if request.cloud.get("disk_gb"):
            args["BlockDeviceMappings"] = [{"DeviceName": root_device, "Ebs": {
                "VolumeSize": int(request.cloud["disk_gb"]), "VolumeType": "gp3", "DeleteOnTermination": True}}]
        if request.spot:
            options: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
            if request.max_price is not None:
                options["MaxPrice"] = f"{request.max_price:.6f}"
            args["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        aws = request.cloud.get("aws") or {}
        subnet = aws.get("subnet_id")
        if isinstance(subnet, dict):  # one subnet per zone
            subnet = subnet.get(zone) if zone else None
        if subnet:
            args["SubnetId"] = subnet
        if aws.get("security_group_ids"):
            args["SecurityGroupIds"] = list(aws["security_group_ids"])
        if aws.get("key_name"):
            args["KeyName"] = aws["key_name"]
        profile = aws.get("iam_instance_profile")
        if profile:
            args["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
        return args

    async def _boot_plan(self, request: LaunchRequest) -> userdata.BootPlan:
        install = request.cloud.get("install") or self.config.install
        return userdata.BootPlan(
            store=_store_for_user_data(request.secrets),
            job_id=request.job_id, attempt=request.attempt, run=request.run, setup=request.setup,
            status_store=self.config.store, install=install, version=__version__,
            workdir_key=await self._upload_workdir(request.workdir), env=dict(request.env),
            agent_args=request.agent_args, wheelhouse_url=await self._wheelhouse_url(install),
        )

    async def _wheelhouse_url(self, install: str) -> str | None:
        """`wheelhouse:<dir>`: its wheels as one tar in the store (uploaded once per content), and a
        pre-signed GET of it, good for `WHEELHOUSE_URL_S`: the VM needs no SDK to fetch it."""
        kind, _, folder = install.partition(":")
        if kind != "wheelhouse":
            return None
        if folder not in self._wheelhouses:
            wheels = sorted(Path(folder).glob("*.whl"))
            if not any(w.name.startswith("spotrun-") for w in wheels):
                raise ValueError(f"wheelhouse {folder} has no spotrun wheel: build it with `pip wheel --wheel-dir {folder} spotrun`")
            data = await asyncio.to_thread(_tar, wheels)
            key = f"wheelhouses/{hashlib.sha256(data).hexdigest()}.tar"
            await self._store.put(key, data, create=True)
            self._wheelhouses[folder] = key
        bucket, _, prefix = self.config.store.removeprefix("s3://").partition("/")
        key = f"{prefix.strip('/')}/{self._wheelhouses[folder]}".lstrip("/")
        s3 = self.client("s3", self.config.region)
        return s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=WHEELHOUSE_URL_S)

    async def _upload_workdir(self, workdir: str | None) -> str | None:
        """Content-addressed: an unchanged workdir is uploaded once for every attempt and job."""
        if not workdir:
            return None
        from spotrun.paths import home
        from spotrun.workdir import pack_workdir

        if not Path(workdir).is_dir():
            raise ValueError(f"workdir {workdir} is not a directory: give the folder to copy")
        data = await asyncio.to_thread(pack_workdir, Path(workdir), [home()])
        key = f"workdirs/{hashlib.sha256(data).hexdigest()}.tar.gz"
        await self._store.put(key, data, create=True)
        return key

    async def _check_places(self, places: list[str]) -> None:
        """Every zone and region the job may use exists, checked at its first launch: a typo in the
        third zone fails now, in one line, not at the second relaunch, and never as a refusal
        that sends the job on to the next zone."""
        async with self._places_lock:
            for place in dict.fromkeys(places):
                region = region_of(place) or place
                if self._known_regions is None:
                    found = await self._ec2(self.config.region, "describe_regions", AllRegions=True)
                    self._known_regions = {r["RegionName"] for r in found["Regions"]}
                if region not in self._known_regions:
                    raise ValueError(f"{place!r} is not an AWS region or zone: check resources.zones / regions / region "
                                     f"(a region such as {self.config.region}, or a zone such as {self.config.region}a)")
                if region_of(place) is None:
                    continue
                if region not in self._zones:
                    found = await self._ec2(region, "describe_availability_zones", AllAvailabilityZones=True)
                    self._zones[region] = {z["ZoneName"] for z in found["AvailabilityZones"]}
                if place not in self._zones[region]:
                    raise ValueError(f"zone {place!r} does not exist in {region} (its zones: "
                                     f"{', '.join(sorted(self._zones[region]))}): check resources.zones")

    async def _preflight(self, region: str, itype: str, image: str) -> tuple[str, str]:
        """Bad input fails here, before any instance starts: credentials, region, type, image, store."""
        if ("store",) not in self._checked:
            from spotrun.store.errors import StoreError

            probe = "status/.spotrun-write-check"
            try:
                await self._store.put(probe, b"ok")
                await self._store.delete([probe])
            except StoreError as exc:
                raise ValueError(f"cannot write the aws store {self.config.store}: {exc}") from None
            self._checked.add(("store",))
        if (region, itype) not in self._checked:
            offers = await self._ec2(region, "describe_instance_type_offerings", LocationType="region",
                                     Filters=[{"Name": "instance-type", "Values": [itype]}])
            if not offers.get("InstanceTypeOfferings"):
                raise ValueError(f"instance type {itype!r} is not offered in {region}: check resources.instance_type")
            self._checked.add((region, itype))
        if (region, image) not in self._images:
            ami = image
            if image.startswith("ssm:"):
                ssm = self.client("ssm", region)
                ami = (await asyncio.to_thread(ssm.get_parameter, Name=image[4:]))["Parameter"]["Value"]
            found = (await self._ec2(region, "describe_images", ImageIds=[ami]))["Images"]
            if not found:
                raise ValueError(f"image {ami} does not exist in {region}: set resources.image")
            self._images[(region, image)] = (ami, found[0].get("RootDeviceName", "/dev/sda1"))
        return self._images[(region, image)]

    # --- observe -------------------------------------------------------------------------

    async def _describe(self, region: str, filters: list[dict]) -> list[dict]:
        client = self.client("ec2", region)  # made here: boto3 sessions are not thread-safe

        def pages() -> list[dict]:
            paginator = client.get_paginator("describe_instances")
            return [i for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 1000})
                    for r in page["Reservations"] for i in r["Instances"]]

        return await asyncio.to_thread(pages)

    async def _observe(self) -> dict[str, Instance]:
        """Every spotrun instance in every region in use, and every status record: one pass's view."""
        regions = sorted(self._regions)
        found, statuses = await asyncio.gather(
            asyncio.gather(*(self._describe(r, [{"Name": "tag-key", "Values": [TAG_JOB]}]) for r in regions)),
            self._status_or_none(),
        )
        instances = {}
        for region, raws in zip(regions, found):
            for raw in raws:
                inst = self._to_instance(region, raw, statuses)
                instances[inst.id] = inst
        ended = [i for i in instances.values() if i.state in ENDED and i.id not in self._logged]
        live = [i for i in instances.values() if i.state not in ENDED and i.log_path and watched(i.log_path)]
        await asyncio.gather(*(self._keep_log(i) for i in ended), *(self._keep_log(i, final=False) for i in live))
        return instances

    def _log_path(self, iid: str) -> str:
        from spotrun.paths import home

        return str(home() / "aws" / "logs" / f"{iid.replace(':', '_')}.log")

    async def _keep_log(self, inst: Instance, final: bool = True) -> None:
        """The attempt's log (`Instance.log_path`), from the store: once the instance ended, and
        every pass before that while someone reads it (`status.watch_log`); best effort: what
        the agent could not ship before the machine went is not there."""
        try:
            await self._status.keep_log(inst.job_id, inst.attempt, Path(self._log_path(inst.id)))
        except Exception as exc:  # noqa: BLE001  a store outage costs this copy, not the pass
            log.info("no log for %s: %s", inst.id, exc)
        if final:
            self._logged.add(inst.id)

    async def _status_or_none(self) -> dict[tuple[str, int], Status]:
        try:
            return await self._status.read_all()
        except Exception as exc:  # noqa: BLE001  a store outage: judge by EC2's state alone
            log.warning("status records unreadable (%s); using EC2's state only", exc)
            return {}

    async def query(self, instance_id: str) -> Instance:
        region = instance_id.partition(":")[0]
        if region not in self._regions:  # an instance from before a restart, in a region not yet seen
            self._regions.add(region)
            self._fleet.forget()
        found = (await self._fleet.get()).get(instance_id)
        return found or Instance(id=instance_id, token="", job_id="", attempt=0, state=InstanceState.GONE, spot=False)

    async def list_instances(self, job_id: str | None = None) -> list[Instance]:
        found = [i for i in (await self._fleet.get()).values() if job_id is None or i.job_id == job_id]
        return sorted(found, key=lambda i: i.launched_at or 0.0)

    def _to_instance(self, region: str, raw: dict, statuses: dict[tuple[str, int], Status]) -> Instance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        iid = f"{region}:{raw['InstanceId']}"
        job_id, attempt = tags.get(TAG_JOB, ""), int(tags.get(TAG_ATTEMPT, "0") or 0)
        launched_at = raw["LaunchTime"].timestamp()
        cloud_state, reason = self._cloud_state(raw)
        if raw["State"]["Name"] == "terminated":
            self._terminated.add(iid)
        now = time.time()
        seen = outcome(
            cloud_state, reason, statuses.get((job_id, attempt)), launched_at=launched_at, now=now,
            boot_timeout_s=self.config.boot_timeout_s, stale_after_s=self.config.stale_after_s,
        )
        ended_at = None
        if seen.state in ENDED:
            status = statuses.get((job_id, attempt))
            ended_at = (status and (status.exited_at or status.ended_at)) or self._ended_seen.setdefault(iid, now)
        price = tags.get(TAG_PRICE)
        return Instance(
            id=iid, token=tags.get(TAG_TOKEN, ""), job_id=job_id, attempt=attempt, state=seen.state,
            owner=tags.get(TAG_OWNER),
            spot=raw.get("InstanceLifecycle") == "spot", zone=raw.get("Placement", {}).get("AvailabilityZone"),
            instance_type=raw.get("InstanceType"), price_per_hour=float(price) if price else None,
            launched_at=launched_at, ended_at=ended_at, returncode=seen.returncode,
            log_path=self._log_path(iid) if job_id else None,
        )

    @staticmethod
    def _cloud_state(raw: dict) -> tuple[InstanceState, str]:
        """EC2's state and reason as spotrun's states: who ended it matters, not just that it ended."""
        name = raw["State"]["Name"]
        reason = raw.get("StateReason", {}) or {}
        code, message = reason.get("Code", ""), reason.get("Message", "")
        if name == "pending":
            return InstanceState.PENDING, ""
        if name == "running":
            return InstanceState.RUNNING, ""
        if RECLAIM_REASON in code:
            return InstanceState.RECLAIMED, f"reclaimed by AWS ({message or code})"
        if code == OUR_STOP_REASON:
            return InstanceState.TERMINATED, "terminated"
        if code == POWER_OFF_REASON:
            return InstanceState.GONE, "powered off without the agent's exit record"
        return InstanceState.GONE, f"{name} ({message or code or 'no reason given'})"

    # --- stop ----------------------------------------------------------------------------

    async def terminate(self, instance_id: str) -> None:
        if instance_id in self._terminated:  # no call, and EC2's reason for the end stays as it was
            return
        region, _, ec2_id = instance_id.partition(":")
        try:
            await self._ec2(region, "terminate_instances", InstanceIds=[ec2_id])
        except Exception as exc:
            from botocore.exceptions import ClientError

            if not (isinstance(exc, ClientError) and errors.code_of(exc).startswith("InvalidInstanceID")):
                raise
        self._fleet.forget()

    async def interrupt(self, instance_id: str, lead_s: float | None = None) -> None:
        raise NotImplementedError(
            "EC2 reclaims spot instances on its own; to rehearse one on AWS use FIS "
            "(aws:ec2:send-spot-instance-interruptions), or `spotrun demo --cloud aws` locally"
        )

    def prices(self, instance_type: str | None, zone: str | None) -> tuple[float, float]:
        itype = instance_type or self.config.instance_type
        region = (region_of(zone) if zone else None) or zone or self.config.region
        spot = self._spot_prices.spot(self.client("ec2", region), region, itype, zone if zone and region_of(zone) else None)
        od = on_demand(itype, spot)
        if od is None:
            log.warning("no price known for %s: costs are reported as 0", itype)
            return (spot or 0.0, 0.0)
        return (od if spot is None else spot, od)
