"""`spotrun emulate`: serve a cloud's spot notice endpoint locally, and trigger notices on it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, duration_arg, fail, print_json

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
        "`spotrun exec --metadata-url URL`) at the URL printed on the first line.\n" + CONTROL_HELP
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


def _serve(emulator: Any, host: str, port: int, socket: Path | None, notice_in: float | None,
           kind: str, action: str | None, lead_s: float | None) -> None:
    """Run `emulator` until Ctrl-C / SIGTERM, printing its URL first for parent processes."""
    from spotrun.emulators.base import ControlError

    if socket is not None:
        _claim_socket(socket)
    trigger_args = {"kind": kind, "action": action, "lead_s": lead_s}
    try:  # check the trigger now, on a scratch emulator, rather than fail later in a timer
        type(emulator)().trigger(**trigger_args)
    except ControlError as exc:
        fail(f"{exc}")

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
def aws(
    host: str = HOST, port: int = PORT, socket: Path | None = SOCKET,
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD,
    imdsv2_required: bool = typer.Option(
        False, "--imdsv2-required", help="Refuse requests without a session token (HttpTokens=required)."
    ),
) -> None:
    """EC2 instance metadata (IMDSv1/v2): spot/instance-action, rebalance, maintenance."""
    from spotrun.emulators.aws import AwsEmulator

    _serve(AwsEmulator(imdsv2_required=imdsv2_required), host, port, socket, notice_in, kind, action, lead_time)


@emulate.command("gcp")
def gcp(
    host: str = HOST, port: int = PORT, socket: Path | None = SOCKET,
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD,
) -> None:
    """GCE metadata server: instance/preempted and maintenance-event, with hanging GETs."""
    from spotrun.emulators.gcp import GcpEmulator

    _serve(GcpEmulator(), host, port, socket, notice_in, kind, action, lead_time)


@emulate.command("azure")
def azure(
    host: str = HOST, port: int = PORT, socket: Path | None = SOCKET,
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD,
    vm_name: str = typer.Option("spotrun-vm", "--vm-name", help="This VM's name, as events list it."),
) -> None:
    """Azure IMDS Scheduled Events: Preempt (at least 30 s ahead), Terminate, maintenance."""
    from spotrun.emulators.azure import AzureEmulator

    _serve(AzureEmulator(vm_name=vm_name), host, port, socket, notice_in, kind, action, lead_time)


@emulate.command("alibaba")
def alibaba(
    host: str = HOST, port: int = PORT, socket: Path | None = SOCKET,
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD,
    token_required: bool = typer.Option(
        False, "--token-required", help="Hardened mode: refuse requests without a session token."
    ),
) -> None:
    """Alibaba Cloud ECS metadata: instance/spot/termination-time."""
    from spotrun.emulators.alibaba import AlibabaEmulator

    emulator = AlibabaEmulator(token_required=token_required)
    _serve(emulator, host, port, socket, notice_in, kind, action, lead_time)


@emulate.command("eci")
def eci(
    host: str = HOST, port: int = PORT,
    socket: Path | None = typer.Option(
        None, "--socket", help="Unix socket to serve on [default: eci-guest-agent.sock in SPOTRUN_HOME]."
    ),
    notice_in: float | None = NOTICE_IN, kind: str = KIND, action: str | None = ACTION,
    lead_time: float | None = LEAD,
) -> None:
    """Alibaba ECI guest agent on a Unix socket: /vm/metadata?key=spot_termination_time."""
    from spotrun.emulators.eci import EciEmulator
    from spotrun.paths import home

    path = socket or home() / "eci-guest-agent.sock"
    _serve(EciEmulator(), host, port, path, notice_in, kind, action, lead_time)


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
