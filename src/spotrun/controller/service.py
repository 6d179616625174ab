"""The controller as a process: the lock that keeps it single, its providers, and the daemon.

On SQLite exactly one controller may run per database file (an flock beside the file; the
kernel drops it when the process dies, so a SIGKILLed controller never leaves a stale lock).
On PostgreSQL several may run; each job is leased to one of them (`controller/leases.py`).

Discovery is per database: `controllers/<key>.json` under `$SPOTRUN_HOME` names the one
controller `spotrun controller status/stop` mean for the database `SPOTRUN_DB_URL` selects, so
controllers of different databases sharing a home never overwrite or delete each other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import make_url

from spotrun.controller.db import Database
from spotrun.extras import require
from spotrun.paths import default_db_url, home, open_private, private_dir

START_WAIT_S = 30.0  # a cold start imports sqlalchemy and alembic; the machine may be loaded


class ControllerBusy(RuntimeError):
    pass


class ControllerError(RuntimeError):
    pass


def _controllers_dir() -> Path:
    return private_dir(home() / "controllers")


def _key(db_url: str | None) -> str:
    """Names a database's files: its URL without password, hashed (one per database, short)."""
    url = make_url(db_url or default_db_url()).render_as_string(hide_password=True)
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def pid_file(db_url: str | None = None) -> Path:
    return _controllers_dir() / f"{_key(db_url)}.json"


def log_file(db_url: str | None = None) -> Path:
    return _controllers_dir() / f"{_key(db_url)}.log"


@contextlib.contextmanager
def _pid_files_lock() -> Iterator[None]:
    """Reading, claiming and removing discovery files take turns (dropped if the holder dies)."""
    with open_private(_controllers_dir() / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _claim(db_url: str, info: dict) -> dict | None:
    """Record this process as the database's controller unless a live one is recorded (a second
    controller on PostgreSQL); returns that other one's info, else None."""
    with _pid_files_lock():
        other = _live_info(db_url)
        if other is not None and other.get("pid") != os.getpid():
            return other
        with open_private(pid_file(db_url), "w") as f:
            f.write(json.dumps(info))
        return None


def _release(db_url: str) -> None:
    with _pid_files_lock(), contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads(pid_file(db_url).read_text()).get("pid") == os.getpid():
            pid_file(db_url).unlink()


@contextlib.contextmanager
def controller_lock(db: Database) -> Iterator[None]:
    """Hold the one-controller-per-SQLite-file lock for the block; a no-op on PostgreSQL."""
    if db.sqlite_path is None:
        yield
        return
    path = Path(f"{db.sqlite_path}.controller.lock")
    f: IO[str] = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise ControllerBusy(
                f"another spotrun controller (pid {holder}) already runs on {db.sqlite_path}; "
                "use `spotrun controller status` / `spotrun controller stop`, or set "
                "SPOTRUN_DB_URL to another database"
            ) from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


def make_providers(market: Any = None) -> dict[str, Any]:
    """The providers this controller can launch on, built once and shared by every job."""
    from spotrun.providers.local.provider import LocalProvider

    providers: dict[str, Any] = {"local": LocalProvider(home() / "local", market)}
    if os.environ.get("SPOTRUN_AWS_STORE"):  # configured: see docs/aws.md
        require("aws", "the aws provider (SPOTRUN_AWS_STORE is set)")
        from spotrun.providers.aws import AwsConfig, AwsProvider

        providers["aws"] = AwsProvider(AwsConfig.from_env())
    if os.environ.get("SPOTRUN_KUBERNETES_STORE"):  # configured: see docs/kubernetes.md
        require("kubernetes", "the kubernetes provider (SPOTRUN_KUBERNETES_STORE is set)")
        from spotrun.providers.kubernetes import KubeConfig, KubernetesProvider

        providers["kubernetes"] = KubernetesProvider(KubeConfig.from_env())
    from spotrun.providers.sim import SimConfig, SimProvider

    providers["sim"] = SimProvider(SimConfig.from_env())  # in memory: costs nothing until a job uses it
    return providers


def local_market(lifetime_s: float | None, lead_s: float | None, seed: int | None = None) -> Any:
    if lifetime_s is None and lead_s is None:
        return None
    from spotrun.providers.local.market import MarketConfig

    return MarketConfig(mean_lifetime_s=lifetime_s, lead_s=lead_s, seed=seed)


def serve(db_url: str | None = None, market: Any = None, interval: float = 1.0, lease_s: float = 30.0) -> None:
    """Run the reconciler in this process until SIGTERM/SIGINT (`spotrun controller run`)."""
    from spotrun.controller.reconciler import Reconciler

    db = Database(db_url)
    with controller_lock(db):
        reconciler = Reconciler(
            db, make_providers(market), interval=interval, lease_s=lease_s, exclusive=db.is_sqlite
        )
        shown = make_url(db.url).render_as_string(hide_password=True)
        info = {"pid": os.getpid(), "db": shown, "started_at": time.time(), "owner": reconciler.owner}
        other = _claim(db.url, info)
        if other is not None:
            logging.getLogger("spotrun.controller").warning(
                "controller %s (pid %s) is the one recorded for %s; `spotrun controller stop` stops that one, "
                "this one stops with SIGTERM", info["owner"], other.get("pid"), shown)
        try:
            asyncio.run(_serve(reconciler))
        finally:
            _release(db.url)
            db.close()


async def _serve(reconciler: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await reconciler.run(stop)


def daemon_info(db_url: str | None = None) -> dict | None:
    """The database's running controller as its discovery file says, or None (a stale file is removed)."""
    with _pid_files_lock():
        return _live_info(db_url)


def _live_info(db_url: str | None) -> dict | None:
    try:
        info = json.loads(pid_file(db_url).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not _alive(info.get("pid", -1)):
        pid_file(db_url).unlink(missing_ok=True)
        return None
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(FileNotFoundError):  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return True


def start_daemon(extra_args: list[str] | None = None) -> dict:
    """Start the background controller unless one runs; return its info.

    Starters take turns (an flock), so launches made at once start one daemon between them
    and each gets its info, instead of all but one losing the database lock at start.
    """
    with open(home() / "controller.start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # dropped with the file, also by a killed starter
        return daemon_info() or _spawn(extra_args)


def _spawn(extra_args: list[str] | None) -> dict:
    with open_private(log_file(), "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spotrun", "controller", "run", *(extra_args or [])],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: survives the shell and the CLI that started it
            env=os.environ.copy(),
        )
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        info = daemon_info()
        if info is not None and info["pid"] == proc.pid:
            return info
        if proc.poll() is not None:
            tail = "\n".join(log_file().read_text(errors="replace").splitlines()[-5:])
            raise ControllerError(f"the controller exited at start (status {proc.returncode}):\n{tail}")
        time.sleep(0.05)
    raise ControllerError(f"the controller did not come up within {START_WAIT_S:.0f}s; see {log_file()}")


def stop_daemon(timeout: float = 30.0) -> int | None:
    """SIGTERM the daemon and wait for it; its instances keep running, as cloud VMs would."""
    info = daemon_info()
    if info is None:
        return None
    pid = info["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    with _pid_files_lock():
        _live_info(None)  # removes the file if it still names the stopped one
    return pid
