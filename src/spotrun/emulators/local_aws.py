"""A local AWS to run the AWS provider against: moto's EC2 and S3, a fault proxy, and a VM runner.

moto plays the control plane but boots nothing, never runs out of capacity and never reclaims.
So, on 127.0.0.1:

- `FaultProxy` sits in front of moto's EC2 and answers chosen calls with EC2's real error XML
  (`InsufficientInstanceCapacity` for one zone, throttling, ...) or with per-zone spot prices;
  everything else goes through to moto. It counts calls by action (the scale benchmark).
- `Outage` relays S3 (the store) over TCP and can cut it: every connection dropped, open or new,
  as a partition or an S3 outage looks to the agent and the controller alike.
- `VmRunner` plays every spotrun instance moto holds: it runs the instance's real user data as a
  local process group with an IMDS emulator as its metadata endpoint, powers the instance off in
  moto when the script ends, and kills the processes when moto says the instance was
  terminated. A reclaim is what EC2 does: the emulator serves the notice, and at the deadline the
  instance is terminated with `Server.SpotInstanceTermination`.

`LocalAws` starts all three; the tests and `spotrun demo --cloud aws` use it the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import ClientSession, web

from spotrun.emulators.aws import AwsEmulator
from spotrun.emulators.profile import InstanceProfile
from spotrun.providers.local import procs

ACCOUNT = "123456789012"  # moto's default account
POLL_S = 0.1
STOP_GRACE_S = 5.0  # an ACPI shutdown gives processes this long after SIGTERM
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}

# What EC2 answers, per code: the HTTP status and a message in EC2's words.
EC2_ERRORS = {
    "InsufficientInstanceCapacity": (500, "We currently do not have sufficient {type} capacity in the Availability Zone you requested ({zone}). Our system will be working on provisioning additional capacity. You can currently get {type} capacity by not specifying an Availability Zone in your request or choosing a different Availability Zone."),
    "SpotMaxPriceTooLow": (400, "Your Spot request price of {price} is lower than the minimum required Spot request fulfillment price of {market}."),
    "MaxSpotInstanceCountExceeded": (400, "Max spot instance count exceeded"),
    "InstanceLimitExceeded": (400, "You have requested more instances than your current instance limit allows for the specified instance type. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit."),
    "Unsupported": (400, "Your requested instance type ({type}) is not supported in your requested Availability Zone ({zone})."),
    "RequestLimitExceeded": (503, "Request limit exceeded."),
}

_ERROR_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"""

_PRICES_XML = """<?xml version="1.0" encoding="UTF-8"?>
<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
<requestId>{rid}</requestId><spotPriceHistorySet>{rows}</spotPriceHistorySet><nextToken/></DescribeSpotPriceHistoryResponse>"""

_PRICE_ROW = ("<item><instanceType>{type}</instanceType><productDescription>Linux/UNIX</productDescription>"
              "<spotPrice>{price:.6f}</spotPrice><timestamp>{at}</timestamp><availabilityZone>{zone}</availabilityZone></item>")


@dataclass
class Refusal:
    code: str
    zone: str | None = None  # None: every zone
    spot: bool | None = None  # None: both markets
    times: int | None = None  # None: until cleared


@dataclass
class FaultProxy:
    """EC2 in front of moto, with refusals and prices as a real region would give them."""

    upstream: str
    refusals: list[Refusal] = field(default_factory=list)
    spot_prices: dict[tuple[str, str], float] = field(default_factory=dict)  # (type, zone) -> $/h
    calls: Counter[str] = field(default_factory=Counter)
    history: list[tuple[float, str]] = field(default_factory=list)  # (time, action) of every call
    refused: Counter[str] = field(default_factory=Counter)
    url: str = ""

    def refuse(self, code: str, zone: str | None = None, spot: bool | None = None, times: int | None = None) -> None:
        if code not in EC2_ERRORS:
            raise ValueError(f"unknown EC2 error {code!r}; known: {', '.join(EC2_ERRORS)}")
        self.refusals.append(Refusal(code, zone, spot, times))

    def _refusal(self, params: dict[str, str]) -> Refusal | None:
        zone = params.get("Placement.AvailabilityZone")
        spot = params.get("InstanceMarketOptions.MarketType") == "spot"
        for rule in self.refusals:
            if (rule.zone is None or rule.zone == zone) and (rule.spot is None or rule.spot == spot):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.refusals.remove(rule)
                return rule
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        params = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()} if body else {}
        action = params.get("Action", "?")
        self.calls[action] += 1
        self.history.append((time.time(), action))
        rid = str(uuid.uuid4())
        if action == "RunInstances" and (rule := self._refusal(params)):
            status, message = EC2_ERRORS[rule.code]
            zone = params.get("Placement.AvailabilityZone", "")
            self.refused[f"{rule.code}:{zone}"] += 1
            text = message.format(type=params.get("InstanceType", ""), zone=zone,
                                  price=params.get("InstanceMarketOptions.SpotOptions.MaxPrice", ""), market="0.1")
            xml = _ERROR_XML.format(code=rule.code, message=text, rid=rid)
            return web.Response(status=status, text=xml, content_type="text/xml")
        if action == "DescribeSpotPriceHistory" and self.spot_prices:
            return web.Response(text=self._prices(params, rid), content_type="text/xml")
        async with ClientSession() as session:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
            async with session.request(request.method, self.upstream + request.path_qs, data=body, headers=headers) as up:
                return web.Response(status=up.status, body=await up.read(),
                                    headers={"Content-Type": up.headers.get("Content-Type", "text/xml")})

    def _prices(self, params: dict[str, str], rid: str) -> str:
        types = {v for k, v in params.items() if k.startswith("InstanceType.")}
        zone = params.get("AvailabilityZone")
        at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        rows = "".join(
            _PRICE_ROW.format(type=t, zone=z, price=p, at=at)
            for (t, z), p in sorted(self.spot_prices.items())
            if (not types or t in types) and (zone is None or z == zone)
        )
        return _PRICES_XML.format(rid=rid, rows=rows)


class Outage:
    """A TCP relay in front of one service that a test can cut and mend (`down`)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.down = False
        self.dropped = 0  # connections refused or cut while down
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.dropped += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            dst.close()
            self._open.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self, down: bool) -> None:
        self.down = down
        if down:
            self.dropped += len(self._open) // 2
            for w in list(self._open):
                w.close()

    async def stop(self) -> None:
        await self.cut(True)
        if self._server is not None:
            self._server.close()


@dataclass
class Vm:
    ec2_id: str
    region: str
    zone: str
    spot: bool
    root: Path
    emulator: AwsEmulator
    proc: asyncio.subprocess.Process | None = None
    booted_at: float = 0.0
    notice_at: float | None = None  # when its reclaim notice was served
    ended: str | None = None  # why it is over


class VmRunner:
    """Boots each spotrun instance moto holds as a local process group running its user data."""

    def __init__(self, ec2: dict[str, Any], backends: Any, root: Path, env: dict[str, str], *,
                 lead_s: float = 3.0, lifetime_s: float | None = None, seed: int | None = None) -> None:
        self.ec2 = ec2  # region -> boto3 client straight to moto (not through the fault proxy)
        self.backends = backends
        self.root = root
        self.env = env
        self.lead_s = lead_s
        self.lifetime_s = lifetime_s  # mean spot lifetime of the market mode (the demo); None: only on request
        self.rng = random.Random(seed)
        self.vms: dict[str, Vm] = {}
        self.reclaims: list[dict[str, Any]] = []  # instance and notice time, per reclaim
        self._tasks: set[asyncio.Future] = set()  # machines shutting down (terminated from outside)

    async def run(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception as exc:  # noqa: BLE001  one bad look must not stop the machines
                print(f"[vm runner] {type(exc).__name__}: {exc}", file=sys.stderr)
            await asyncio.sleep(POLL_S)

    async def _tick(self) -> None:
        for region, client in self.ec2.items():
            reservations = await asyncio.to_thread(
                client.describe_instances, Filters=[{"Name": "tag-key", "Values": ["spotrun:job"]}])
            for raw in (i for r in reservations["Reservations"] for i in r["Instances"]):
                vm = self.vms.get(raw["InstanceId"])
                state = raw["State"]["Name"]
                if vm is None and state in ("pending", "running"):
                    await self._boot(region, raw)
                elif vm is not None and vm.ended is None and state not in ("pending", "running"):
                    vm.ended = f"{state} in EC2"  # its shutdown grace runs beside the other machines
                    stopping = asyncio.ensure_future(self._kill(vm, vm.ended, grace_s=STOP_GRACE_S))
                    self._tasks.add(stopping)
                    stopping.add_done_callback(self._tasks.discard)
        for vm in list(self.vms.values()):
            if vm.ended is None and vm.proc is not None and vm.proc.returncode is not None:
                await self._power_off(vm)

    async def _boot(self, region: str, raw: dict) -> None:
        ec2_id = raw["InstanceId"]
        root = self.root / ec2_id
        root.mkdir(parents=True, exist_ok=True)
        attr = await asyncio.to_thread(self.ec2[region].describe_instance_attribute, InstanceId=ec2_id, Attribute="userData")
        script = base64.b64decode(attr.get("UserData", {}).get("Value", "") or b"")
        (root / "user-data").write_bytes(script)
        zone = raw["Placement"]["AvailabilityZone"]
        spot = raw.get("InstanceLifecycle") == "spot"
        profile = InstanceProfile(id=ec2_id, type=raw["InstanceType"], zone=zone, lifecycle="spot" if spot else "on-demand",
                                  user_data=script.decode(errors="replace"))
        emulator = AwsEmulator(imdsv2_required=True, profile=profile)
        url = await emulator.start(host="127.0.0.1", port=0)
        vm = Vm(ec2_id, region, zone, spot, root, emulator, booted_at=time.time())
        self.vms[ec2_id] = vm
        env = {**self.env, **procs.marker_env(ec2_id), "SPOTRUN_VM_ROOT": str(root), "SPOTRUN_METADATA_URL": url}
        with open(root / "console.log", "ab") as console:
            vm.proc = await asyncio.create_subprocess_exec(
                "bash", str(root / "user-data"), cwd=root, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=console, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        if spot and self.lifetime_s:
            asyncio.get_running_loop().call_later(
                self.rng.expovariate(1 / self.lifetime_s), lambda: asyncio.ensure_future(self.reclaim(ec2_id)))

    async def reclaim(self, ec2_id: str, lead_s: float | None = None) -> None:
        """EC2's spot interruption: the two-minute warning (here `lead_s`), then termination."""
        vm = self.vms.get(ec2_id)
        if vm is None or vm.ended is not None or vm.notice_at is not None:
            return
        lead = self.lead_s if lead_s is None else lead_s
        vm.notice_at = time.time()
        self.reclaims.append({"instance": ec2_id, "notice_at": vm.notice_at})
        vm.emulator.trigger("reclaim", action="terminate", lead_s=lead)
        await asyncio.sleep(lead)
        if vm.ended is None:  # else the agent saved work and powered off before the deadline
            await self._end_in_moto(vm, "Server.SpotInstanceTermination", "Server.SpotInstanceTermination: Spot instance termination")
            await self._kill(vm, "reclaimed", grace_s=0.0)

    async def _end_in_moto(self, vm: Vm, code: str, message: str) -> None:
        """Terminated with EC2's own reason, in one step (no reader sees moto's default reason)."""
        from moto.ec2.models.instances import StateReason

        instance = self.backends[ACCOUNT][vm.region].get_instance(vm.ec2_id)
        instance.terminate()
        instance.state_reason = StateReason(message, code)

    async def _power_off(self, vm: Vm) -> None:
        """The boot script ended: the OS shuts down, and shutdown behaviour `terminate` ends it."""
        await self._end_in_moto(vm, "Client.InstanceInitiatedShutdown", "Client.InstanceInitiatedShutdown: Instance initiated shutdown")
        await self._kill(vm, "powered off", grace_s=0.0)

    async def _kill(self, vm: Vm, why: str, grace_s: float) -> None:
        """A machine going away: SIGTERM to its processes and `grace_s` to finish (a terminate's
        ACPI shutdown), then SIGKILL to whatever is left."""
        vm.ended = why
        if grace_s:
            for pid in procs.instance_pids(vm.ec2_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while procs.instance_pids(vm.ec2_id) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        await asyncio.to_thread(procs.kill_instance, vm.ec2_id)
        if vm.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                await vm.proc.wait()
        await vm.emulator.stop()

    async def shutdown(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for vm in self.vms.values():
            if vm.ended is None:
                await self._kill(vm, "runner stopped", grace_s=0.0)


class LocalAws:
    """moto EC2 + S3 on 127.0.0.1 with the fault proxy and the VM runner, in a thread of their own.

        with LocalAws(tmp_path, python=sys.executable) as aws:
            os.environ.update(aws.env)      # what a controller and its instances need
            aws.proxy.refuse("InsufficientInstanceCapacity", zone="us-east-1a", spot=True)
            aws.reclaim(instance_id)
    """

    def __init__(self, root: Path, *, python: str = sys.executable, regions: tuple[str, ...] = ("us-east-1",),
                 bucket: str = "spotrun-local", lead_s: float = 3.0, lifetime_s: float | None = None,
                 seed: int | None = None, boot: bool = True) -> None:
        self.root = Path(root)
        self.python = python
        self.regions = regions
        self.bucket = bucket
        self.runner_args = {"lead_s": lead_s, "lifetime_s": lifetime_s, "seed": seed}
        self.boot = boot  # False: instances stay as moto made them (control-plane benchmarks)
        self.env: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="local-aws")
        self._runner_task: asyncio.Task | None = None

    def __enter__(self) -> LocalAws:
        import logging

        import boto3
        from moto.ec2.models import ec2_backends
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self._thread.start()
        self.proxy = FaultProxy(self.moto_url)
        self.proxy.url = self.call(self._serve_proxy())
        self.s3 = Outage(host, port)
        s3_url = self.call(self.s3.start())
        region = self.regions[0]
        self.env = {
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true",  # never 169.254.169.254 from the controller's side
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_S3": s3_url,
            "AWS_ENDPOINT_URL_EC2": self.proxy.url,
            "SPOTRUN_AWS_STORE": f"s3://{self.bucket}/spotrun",
            "SPOTRUN_AWS_REGION": region,
            "SPOTRUN_AWS_INSTALL": f"python:{self.python}",
            "SPOTRUN_AWS_IMAGE": "ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        }
        # moto keeps its state per process, not per server: start from an empty cloud.
        urllib.request.urlopen(urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST"), timeout=30)
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        session.client("s3", region_name=region, endpoint_url=self.moto_url).create_bucket(Bucket=self.bucket)
        ec2 = {r: session.client("ec2", region_name=r, endpoint_url=self.moto_url) for r in self.regions}
        vm_env = {**os.environ, **self.env}
        self.runner = VmRunner(ec2, ec2_backends, self.root / "vms", vm_env, **self.runner_args)  # type: ignore[arg-type]
        if self.boot:
            self._runner_task = self.call(self._start_runner())
        return self

    async def _serve_proxy(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.proxy.handle)
        self._proxy_runner = web.AppRunner(app, access_log=None)
        await self._proxy_runner.setup()
        site = web.TCPSite(self._proxy_runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def _start_runner(self) -> asyncio.Task:
        return asyncio.ensure_future(self.runner.run())

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the local cloud's loop (its state is not thread-safe); its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=120)

    def store_outage(self, down: bool) -> None:
        """Cut S3 (every request fails as unreachable) or bring it back."""
        self.call(self.s3.cut(down))

    def reclaim(self, instance_id: str, lead_s: float | None = None) -> None:
        """Start a reclaim of a provider instance id (`region:i-...`) or an EC2 id; returns at once."""
        ec2_id = instance_id.rpartition(":")[2]
        asyncio.run_coroutine_threadsafe(self.runner.reclaim(ec2_id, lead_s), self._loop)

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner_task is not None:
                self._runner_task.cancel()
            await self.runner.shutdown()
            await self._proxy_runner.cleanup()
            await self.s3.stop()

        with contextlib.suppress(Exception):
            self.call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.moto.stop()
