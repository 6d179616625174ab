"""The agent's status record: how a controller learns an attempt's fate on any cloud.

A cloud instance has no inbound port and no SSH for the controller, so the agent reports
through the checkpoint store it already writes to (docs/store-format.md, "Status records"):

    status/<job>/a<attempt:06>/beat     overwritten every few seconds while the agent lives
    status/<job>/a<attempt:06>/notice   created once, when a reclaim notice arrives
    status/<job>/a<attempt:06>/ended    created once, the moment the command ends (before the final sync)
    status/<job>/a<attempt:06>/exit     created once, with the exit status (75 = reclaimed), after it

With `--log-file`, the agent also ships its log (the boot script's output: install, setup, the
job) as it grows, to `logs/<job>/a<attempt:06>/<byte offset:012>`, outside `status/` so the
pass's LIST stays small; a provider copies it once the attempt ended (`StatusReader.keep_log`).

The heartbeat's age is the object's `last_modified`, so one LIST of `status/` per reconciler
pass tells a provider every attempt's liveness, notice and exit, whatever the number of jobs;
only a new `ended` or `exit` object is read (once: it never changes). Every cloud provider (AWS,
Kubernetes) combines this with the cloud's own state in `outcome()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from spotrun.notices.base import Notice
from spotrun.providers.base import ENDED, InstanceState

log = logging.getLogger("spotrun.status")

VERSION = 1
PREFIX = "status/"
LOGS = "logs/"
LOG_PIECE = 4 << 20  # the most one log object holds: a burst of output is several objects
HEARTBEAT_S = 5.0
ENDED_WRITE_S = 5.0  # the most the early word may hold up the final sync, against a store that hangs
RETAIN_S = 3600.0  # an exit record this old was read by the controller long ago


def attempt_prefix(job_id: str, attempt: int) -> str:
    return f"{PREFIX}{job_id}/a{attempt:06d}/"


def log_prefix(job_id: str, attempt: int) -> str:
    return f"{LOGS}{job_id}/a{attempt:06d}/"


WATCHED_S = 30.0  # a reader that stopped reading this long ago no longer costs store calls


def watch_log(log_path: str) -> None:
    """Say that someone reads this instance's log now (`spotrun logs -f`, the dashboard): a
    provider whose log is a copy from the store refreshes it every pass while it is watched,
    rather than only once the attempt has ended."""
    from spotrun.paths import open_private

    marker = Path(log_path + ".watch")
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open_private(marker, "a"):
        pass
    os.utime(marker)


def watched(log_path: str) -> bool:
    try:
        return time.time() - Path(log_path + ".watch").stat().st_mtime < WATCHED_S
    except OSError:
        return False


def _doc(**fields: object) -> bytes:
    return json.dumps({"version": VERSION, **fields}, separators=(",", ":")).encode()


class StatusHook:
    """Agent hook that writes the record; a store outage delays a beat, never the job."""

    def __init__(self, store_url: str, job_id: str, attempt: int, every_s: float = HEARTBEAT_S,
                 log_file: Path | None = None) -> None:
        from spotrun.store.backend import Backend

        self.backend = Backend(store_url, create=True)
        self.prefix = attempt_prefix(job_id, attempt)
        self.job_id, self.attempt, self.every_s = job_id, attempt, every_s
        self.started_at = time.time()
        self.log_file, self._shipped = log_file, 0

    async def _ship_log(self) -> None:
        """What the log gained since the last call, as objects named by their byte offset: a
        machine that goes takes its disk along, so the log must already be in the store."""
        if self.log_file is None:
            return
        try:
            size = self.log_file.stat().st_size
        except OSError:
            return
        while self._shipped < size:
            with open(self.log_file, "rb") as f:
                f.seek(self._shipped)
                data = f.read(min(LOG_PIECE, size - self._shipped))
            if not data:
                return
            try:
                await self.backend.put(f"{log_prefix(self.job_id, self.attempt)}{self._shipped:012d}", data)
            except Exception as exc:  # noqa: BLE001  the next beat tries again from the same offset
                log.warning("could not ship the log: %s", exc)
                return
            self._shipped += len(data)

    async def _put(self, name: str, body: bytes, create: bool = False) -> None:
        try:
            await self.backend.put(self.prefix + name, body, create=create)
        except Exception as exc:  # noqa: BLE001  the controller falls back on the cloud's state
            log.warning("could not write the status record %s: %s", name, exc)

    async def _beat(self) -> None:
        await self._put("beat", _doc(job=self.job_id, attempt=self.attempt, started_at=self.started_at, at=time.time()))

    async def before_start(self, env: dict[str, str]) -> None:
        await self._beat()  # "agent running", before any restore
        await self._ship_log()  # the boot so far: install and workdir, where a failed boot would show

    async def while_running(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self._beat()
            await self._ship_log()

    async def on_notice(self, notice: Notice, budget_s: float | None) -> None:
        await self._put("notice", _doc(at=time.time(), action=notice.action, kind=notice.kind.value), create=True)
        await self._ship_log()

    async def command_ended(self, returncode: int) -> None:
        """The early word: a machine reclaimed during the final sync (which may upload gigabytes)
        must not turn a finished command into a lost one that runs, side effects and all, again."""
        try:
            await asyncio.wait_for(self._put("ended", _doc(at=time.time(), returncode=returncode), create=True),
                                   ENDED_WRITE_S)
        except TimeoutError:
            log.warning("the store did not take the status record ended within %gs; going on with the final sync",
                        ENDED_WRITE_S)

    async def after_exit(self, returncode: int) -> None:
        await self._ship_log()  # before `exit`: a reader that sees the exit finds the whole log
        await self._put("exit", _doc(at=time.time(), returncode=returncode), create=True)


@dataclass(frozen=True)
class Status:
    """What the store says of one attempt."""

    beat_at: float | None = None  # the last heartbeat (the store's clock)
    notice: bool = False
    returncode: int | None = None  # from `exit`
    exited_at: float | None = None
    ended: int | None = None  # from `ended`: how the command ended, the final sync perhaps not done
    ended_at: float | None = None


class StatusReader:
    """Every attempt's status from one LIST; `exit` bodies read once and kept."""

    def __init__(self, store_url: str, retry_timeout_s: float | None = None) -> None:
        from spotrun.store.backend import Backend

        self.backend = Backend(store_url, create=True, retry_timeout_s=retry_timeout_s)
        self._records: dict[str, tuple[int, float]] = {}

    async def read_all(self) -> dict[tuple[str, int], Status]:
        found: dict[tuple[str, int], dict] = {}
        keys: dict[tuple[str, int], list[str]] = {}
        for obj in await self.backend.list(PREFIX):
            parts = obj.key[len(PREFIX):].split("/")
            if len(parts) != 3 or not parts[1].startswith("a") or not parts[1][1:].isdigit():
                continue
            job, attempt, name = parts[0], int(parts[1][1:]), parts[2]
            entry = found.setdefault((job, attempt), {})
            keys.setdefault((job, attempt), []).append(obj.key)
            if name == "beat":
                entry["beat_at"] = _ts(obj.last_modified)
            elif name == "notice":
                entry["notice"] = True
            elif name == "exit":
                entry["returncode"], entry["exited_at"] = await self._record(obj.key)
            elif name == "ended":
                entry["ended"], entry["ended_at"] = await self._record(obj.key)
        statuses = {key: Status(**fields) for key, fields in found.items()}
        # Records (and logs) of attempts that ended long ago go, so the listings stay the size of the fleet.
        done = [k for k, st in statuses.items() if (at := st.exited_at or st.ended_at) and time.time() - at > RETAIN_S]
        if done:
            old = [key for k in done for key in keys[k]]
            logs = [o.key for job, attempt in done for o in await self.backend.list(log_prefix(job, attempt))]
            await self.backend.delete(old + logs)
            for key in old:
                self._records.pop(key, None)
        return statuses

    async def keep_log(self, job_id: str, attempt: int, dest: Path) -> None:
        """Append to `dest` what the store holds of the attempt's log beyond `dest`'s size."""
        from spotrun.paths import open_private

        have = dest.stat().st_size if dest.exists() else 0
        pieces = []
        for obj in await self.backend.list(log_prefix(job_id, attempt)):
            name = obj.key.rsplit("/", 1)[-1]
            if name.isdigit() and int(name) + obj.size > have:
                pieces.append((int(name), obj.key))
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open_private(dest, "ab") as f:
            for offset, key in sorted(pieces):
                if offset > have:  # a piece never shipped: what follows would be out of place
                    break
                data = await self.backend.get(key) or b""
                f.write(data[have - offset:])
                have = offset + len(data)

    async def _record(self, key: str) -> tuple[int | None, float | None]:
        """An `ended` or `exit` body: read once, as it never changes."""
        if key not in self._records:
            body = await self.backend.get(key)
            with contextlib.suppress(TypeError, ValueError, KeyError):
                doc = json.loads(body or b"")
                if doc.get("version") == VERSION:
                    self._records[key] = (int(doc["returncode"]), float(doc["at"]))
        return self._records.get(key, (None, None))

def _ts(when: datetime) -> float:
    return when.timestamp()


@dataclass(frozen=True)
class Outcome:
    state: InstanceState
    returncode: int | None = None
    detail: str = ""


def outcome(
    cloud_state: InstanceState, cloud_reason: str, status: Status | None, *, launched_at: float,
    now: float, boot_timeout_s: float, stale_after_s: float, cloud_returncode: int | None = None,
) -> Outcome:
    """One verdict from three witnesses: the agent's record, the cloud's state, the beat's age.

    The agent's exit status wins (it knows whether the job finished, failed or saved work for a
    reclaim); then the cloud's own word: a reclaim whose notice never came, or an end the cloud
    can tell itself (a pod's container OOMKilled, with `cloud_returncode`; an image that never
    pulled, UNBOOTED); then silence: no first beat within the boot timeout, or a beat gone
    stale, is an instance lost. An instance that ended, or went silent, after its command had
    ended (the `ended` record, with no `exit`: the machine went during the final sync) ended
    the way its command did.
    """
    if status is not None and status.returncode is not None:
        return Outcome(InstanceState.EXITED, status.returncode, f"the agent exited with status {status.returncode}")
    verdict = _without_exit(cloud_state, cloud_reason, status, launched_at=launched_at, now=now,
                            boot_timeout_s=boot_timeout_s, stale_after_s=stale_after_s,
                            cloud_returncode=cloud_returncode)
    if verdict.state in ENDED and status is not None and status.ended is not None:
        why = verdict.detail or verdict.state.value
        return Outcome(InstanceState.EXITED, status.ended, f"the command ended with status {status.ended}; "
                       f"the machine went ({why}) before the agent's final sync was done")
    return verdict


def _without_exit(
    cloud_state: InstanceState, cloud_reason: str, status: Status | None, *, launched_at: float,
    now: float, boot_timeout_s: float, stale_after_s: float, cloud_returncode: int | None,
) -> Outcome:
    if cloud_state in ENDED:
        return Outcome(cloud_state, cloud_returncode, cloud_reason)
    if status is None or status.beat_at is None:
        if now - launched_at > boot_timeout_s:
            return Outcome(InstanceState.UNBOOTED, None, f"no heartbeat within the boot timeout ({boot_timeout_s:g}s)")
        return Outcome(InstanceState.PENDING)
    if now - status.beat_at > stale_after_s:
        return Outcome(InstanceState.GONE, None, f"heartbeat silent for {now - status.beat_at:.0f}s")
    if status.notice or cloud_state == InstanceState.NOTICE:
        return Outcome(InstanceState.NOTICE)
    return Outcome(InstanceState.RUNNING)


__all__ = ["HEARTBEAT_S", "Outcome", "Status", "StatusHook", "StatusReader", "outcome"]
