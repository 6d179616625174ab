"""`spotrun emulate`: serve a cloud's spot notice endpoint locally, and trigger notices on it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, duration_arg, fail, needs, print_json

CONTROL_HELP = """
Control API (what `spotrun emulate trigger` uses; any HTTP client works):

  POST URL/_spotrun/trigger  {"kind": "reclaim", "action": "terminate", "lead_s": 120}

  POST URL/_spotrun/clear    back to no notice

  POST URL/_spotrun/fail     {"status": 503, "count": 3}: the next 3 requests fail

  GET  URL/_spotrun/state    what is being served
"""

emulate = typer.Typer(
    help=(
        "Serve a cloud's spot notice endpoint on this machine, faithful to the wire "
        "(paths, headers, tokens, long polls, dates), to test a job's reclaim handling "
        "without a cloud.\n\n"
        "Example: `spotrun emulate aws --notice-in 30s` then point your code (or "
        "`spotrun exec --metadata-url URL`) at the URL printed on the first line. AWS requires "
        "IMDSv2 tokens, as new instances do (`--allow-imdsv1` to serve tokenless requests too); "
        "`--profile` sets the instance's id, type, zone and lifecycle for every path. "
        "Details: docs/emulators.md.\n" + CONTROL_HELP
    ),
    no_args_is_help=True,
)
app.add_typer(emulate, name="emulate")

HOST = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep it local).")
PORT = typer.Option(0, "--port", help="Port to listen on; 0 picks a free one.")
SOCKET = typer.Option(None, "--socket", help="Serve on this Unix socket instead of TCP.")
NOTICE_IN = typer.Option(
    None, "--notice-in", parser=duration_arg, metavar="DURATION",
    help="Trigger a notice this long after starting (e.g. 30s, 2m).",
)
KIND = typer.Option("reclaim", "--kind", help="reclaim | rebalance | maintenance.")
ACTION = typer.Option(
    None, "--action",
    help="The cloud's action: aws terminate|stop|hibernate (or a maintenance code), "
    "azure Preempt|Terminate|Reboot|Freeze|Redeploy, gcp TERMINATE_ON_HOST_MAINTENANCE...",
)
LEAD = typer.Option(
    None, "--lead-time", parser=duration_arg, metavar="DURATION",
    help="How long before the machine goes (default: the cloud's own, e.g. 2m on AWS).",
)
PROFILE = typer.Option(
    None, "--profile", metavar="FILE|KEY=VALUE,...",
    help="The instance's facts, served the same by every path: id, type, zone, lifecycle "
    "(spot | on-demand), name, user-data; e.g. `--profile type=p4d.24xlarge,zone=us-west-2b` "
    "or a YAML/JSON file with those keys. Left out: the cloud's defaults.",
)


def _profile(text: str | None, **overrides: Any) -> Any:
    """The `--profile` given, one clear line if it cannot describe an instance."""
    import dataclasses

    from spotrun.emulators.profile import InstanceProfile, ProfileError

    try:
        profile = InstanceProfile.parse(text) if text else InstanceProfile()
        return dataclasses.replace(profile, **{k: v for k, v in overrides.items() if v is not None})
    except ProfileError as exc:
        fail(str(exc))


def _serve(make: Callable[[], Any], host: str, port: int, socket: Path | None, notice_in: float | None,
           kind: str, action: str | None, lead_s: float | None) -> None:
    """Run the emulator `make` builds until Ctrl-C / SIGTERM, printing its URL first for parent
    processes; its warnings (a refused tokenless request, ...) go to stderr, one line each."""
    import logging
    import sys

    from spotrun.emulators.base import ControlError, NotSpotError

    if socket is not None:
        _claim_socket(socket)
    trigger_args = {"kind": kind, "action": action, "lead_s": lead_s}
    try:  # check the trigger now, on a scratch emulator, rather than fail later in a timer
        make().trigger(**trigger_args)
    except NotSpotError as exc:  # an on-demand profile is fine unless a notice is asked for
        if notice_in is not None:
            fail(f"{exc}")
    except ControlError as exc:
        fail(f"{exc}")
    emulator = make()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("spotrun emulate: %(levelname)s %(message)s"))
    logging.getLogger("spotrun.emulators").addHandler(handler)
    logging.getLogger("spotrun.emulators").setLevel(logging.INFO)

    async def run() -> None:
        try:
            url = await emulator.start(host=host, port=port, socket_path=str(socket) if socket else None)
        except OSError as exc:
            fail(f"cannot listen on {socket or f'{host}:{port}'}: {exc.strerror or exc}; "
                 "pick another --port (0 = any free port) or --socket")
        print(url, flush=True)
        console.print(f"{emulator.cloud} notice endpoint emulator serving on {url}", highlight=False)
        console.print(f"trigger a notice: spotrun emulate trigger {url} --kind reclaim", highlight=False)
        if notice_in is not None:
            emulator.schedule_trigger(notice_in, **trigger_args)
            console.print(f"a {kind} notice will appear in {notice_in:g}s", highlight=False)
        console.print("stop with Ctrl-C", highlight=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await emulator.stop()

    asyncio.run(run())


def _claim_socket(path: Path) -> None:
    """Remove a stale socket left by an earlier run, but never one that is still served."""
    import socket

    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    fail(f"something is already serving on {path}; stop it or pass another --socket")


@emulate.command("aws")
@needs("emulate")
def aws(
    host: str = HOST, port: int = PORT, socket: Path | None = SOCKET,
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD, profile: str | None = PROFILE,
    imdsv2_required: bool = typer.Option(
        True, "--imdsv2-required/--allow-imdsv1",
        help="IMDSv2 only (the default, as on new instance types and AMIs: HttpTokens=required): a "
        "request without a token gets 401 and a warning here. --allow-imdsv1 also answers "
        "tokenless requests, as HttpTokens=optional instances do; code that passes only with it "
        "will hear no notice on an IMDSv2-only instance.",
    ),
) -> None:
    """EC2 instance metadata (IMDSv2): spot/instance-action, rebalance, maintenance, identity."""
    from spotrun.emulators.aws import AwsEmulator

    facts = _profile(profile)
    _serve(lambda: AwsEmulator(imdsv2_required=imdsv2_required, profile=facts),
           host, port, socket, notice_in, kind, action, lead_time)


@emulate.command("gcp")
@needs("emulate")
def gcp(
    host: str = HOST, port: int = PORT, socket: Path | None = SOCKET,
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD, profile: str | None = PROFILE,
) -> None:
    """GCE metadata server: instance/preempted and maintenance-event, with hanging GETs."""
    from spotrun.emulators.gcp import GcpEmulator

    facts = _profile(profile)
    _serve(lambda: GcpEmulator(profile=facts), host, port, socket, notice_in, kind, action, lead_time)


@emulate.command("azure")
@needs("emulate")
def azure(
    host: str = HOST, port: int = PORT, socket: Path | None = SOCKET,
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD, profile: str | None = PROFILE,
    vm_name: str | None = typer.Option(
        None, "--vm-name", help="This VM's name, as events list it (the profile's name) [default: spotrun-vm]."
    ),
    first_call_delay: float = typer.Option(
        0.0, "--first-call-delay", parser=duration_arg, metavar="DURATION",
        help="The service enables itself on the first call, which may take up to 2 minutes: "
        "every request in that window waits this long after the first one (e.g. 2m).",
    ),
) -> None:
    """Azure IMDS Scheduled Events: Preempt (at least 30 s ahead), Terminate, maintenance."""
    from spotrun.emulators.azure import AzureEmulator

    facts = _profile(profile, name=vm_name)
    _serve(lambda: AzureEmulator(profile=facts, first_call_delay_s=first_call_delay),
           host, port, socket, notice_in, kind, action, lead_time)


@emulate.command("alibaba")
@needs("emulate")
def alibaba(
    host: str = HOST, port: int = PORT, socket: Path | None = SOCKET,
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD, profile: str | None = PROFILE,
    token_required: bool = typer.Option(
        False, "--token-required", help="Hardened mode: refuse requests without a session token."
    ),
) -> None:
    """Alibaba Cloud ECS metadata: instance/spot/termination-time."""
    from spotrun.emulators.alibaba import AlibabaEmulator

    facts = _profile(profile)
    _serve(lambda: AlibabaEmulator(token_required=token_required, profile=facts),
           host, port, socket, notice_in, kind, action, lead_time)


@emulate.command("eci")
@needs("emulate")
def eci(
    host: str = HOST, port: int = PORT,
    socket: Path | None = typer.Option(
        None, "--socket", help="Unix socket to serve on [default: eci-guest-agent.sock in SPOTRUN_HOME]."
    ),
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD, profile: str | None = PROFILE,
) -> None:
    """Elice Cloud (ECI) guest agent on a Unix socket: /vm/metadata?key=spot_termination_time."""
    from spotrun.emulators.eci import EciEmulator
    from spotrun.paths import home

    facts = _profile(profile)
    path = socket or home() / "eci-guest-agent.sock"
    _serve(lambda: EciEmulator(profile=facts), host, port, path, notice_in, kind, action, lead_time)


def _control(url: str, op: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """Send one control request to a running emulator; a clear error if it is not there."""
    import httpx

    uds = url.removeprefix("unix://") if url.startswith("unix://") else None
    base = "http://emulator" if uds else url.rstrip("/")
    transport = httpx.HTTPTransport(uds=uds) if uds else None
    try:
        with httpx.Client(base_url=base, transport=transport, timeout=10, trust_env=False) as client:
            response = client.post(f"/_spotrun/{op}", json=body or {})
    except httpx.HTTPError as exc:
        fail(f"no emulator answering at {url} ({exc}); start one with `spotrun emulate aws` "
             "and pass the URL it prints")
    try:
        data = response.json()
    except ValueError:
        fail(f"{url} is not a spotrun emulator (HTTP {response.status_code} to the control API)")
    if response.status_code != 200:
        fail(data.get("error", f"HTTP {response.status_code}"))
    return data


@emulate.command("trigger")
def trigger(
    url: str = typer.Argument(..., help="The URL the emulator printed (http://... or unix://...)."),
    kind: str = KIND, action: str | None = ACTION, lead_time: float | None = LEAD,
    json_out: bool = JSON_OPTION,
) -> None:
    """Make a running emulator serve a notice now."""
    data = _control(url, "trigger", {"kind": kind, "action": action, "lead_s": lead_time})
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{kind}[/] notice now served at {url}:")
    console.print_json(data=data["event"])


@emulate.command("clear")
def clear(
    url: str = typer.Argument(..., help="The URL the emulator printed."), json_out: bool = JSON_OPTION
) -> None:
    """Remove every notice from a running emulator (the instance is healthy again)."""
    data = _control(url, "clear", None)
    if json_out:
        print_json(data)
    else:
        console.print(f"no notice served at {url} any more")
