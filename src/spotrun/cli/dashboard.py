"""`spotrun dashboard`: the web dashboard and /metrics, beside the controller."""

from __future__ import annotations

import ipaddress
import socket

import typer

from spotrun.cli.app import app
from spotrun.cli.common import console, fail, needs

MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so a taken port is one clear line and --port 0 can print its pick."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another with --port, or --port 0 for any free one")
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@app.command()
@needs("controller")
def dashboard(
    port: int = typer.Option(8765, "--port", "-p", min=0, max=65535, help="Port to serve on (0: any free port, printed)."),
    host: str = typer.Option(
        "127.0.0.1", "--host",
        help="Address to listen on. Anything but loopback needs a token: the page can cancel your jobs.",
    ),
    token: str = typer.Option(
        None, "--token", envvar="SPOTRUN_DASHBOARD_TOKEN", show_default=False,
        help="Secret every request must carry (prefer the SPOTRUN_DASHBOARD_TOKEN variable: flags show in `ps`). "
             "Open /?token=... once in a browser; scripts send `Authorization: Bearer ...`.",
    ),
) -> None:
    """Serve the web dashboard: jobs with live status, each job's attempt timeline, progress,
    work lost per reclaim, snapshots and logs; the fleet's reclaims and savings; cancel,
    resume and interrupt. Also `/metrics` for Prometheus and a JSON API under `/api/`.

    Examples:

      spotrun dashboard  # http://127.0.0.1:8765/

      SPOTRUN_DASHBOARD_TOKEN=$(openssl rand -hex 16) spotrun dashboard --host 0.0.0.0
    """
    loopback = is_loopback(host)
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        fail(f"the token is too short to guard anything (at least {MIN_TOKEN_CHARS} characters); "
             "make one with `openssl rand -hex 16`")
    if not loopback and token is None:
        fail(f"refusing to serve on {host} without a token: anyone who reaches it could cancel your jobs. "
             "Set SPOTRUN_DASHBOARD_TOKEN (e.g. `export SPOTRUN_DASHBOARD_TOKEN=$(openssl rand -hex 16)`) "
             "or leave --host at 127.0.0.1")
    import uvicorn

    from spotrun.cli.jobs import _user_errors
    from spotrun.dashboard.app import create_app

    with _user_errors():
        web = create_app(token=token, loopback=loopback)
    sock = _bind(host, port)
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    console.print(f"dashboard on {url}  (metrics: {url}metrics, API: {url}api/jobs); Ctrl-C stops it", highlight=False, soft_wrap=True)
    if token is not None:
        console.print(f"open {url}?token=<your token> once; the browser keeps it as a cookie", highlight=False, soft_wrap=True)
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning", access_log=False))
    server.run(sockets=[sock])
