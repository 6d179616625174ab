"""The store's two agent hooks: checkpoint sync and write-once outputs.

Both are built from plain values so the supervisor (`spotrun exec --checkpoint-dir DIR
--store URL --sync-interval D --keep N --outputs-dir DIR`) can construct them from its flags.

After a notice, everything they do ends by the notice's deadline whatever the store does (it
may be unreachable, or hang): the machine is gone then, and the agent must have said which
snapshot is the last durable one while it still could.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import time
from pathlib import Path

from spotrun.notices.base import Notice
from spotrun.store.errors import Fenced, HostileManifest, NoSnapshot, StoreError, StoreUnavailable
from spotrun.store.format import job_prefix, safe_relpath
from spotrun.store.restore import restore
from spotrun.store.scan import LocalFile, scan, signature
from spotrun.store.store import SnapshotInfo, Store

log = logging.getLogger("spotrun.store")

POLL_S = 0.25  # how often the directory is looked at; a completed file is synced within ~2 polls
NOTICE_MARGIN_S = 1.0  # left of a notice budget for the supervisor's own last steps


def _deadline(notice: Notice, budget_s: float | None) -> float | None:
    """When work for this notice must be over (monotonic): the notice's deadline, or the
    budget when it gave none, less the supervisor's margin; None when nothing is known."""
    left = notice.seconds_left()
    if left is None or left <= 0:
        left = budget_s
    return None if left is None else time.monotonic() + left - NOTICE_MARGIN_S


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


class CheckpointSync:
    """Restore before start, sync while running (periodically and when a file completes), flush on notice."""

    def __init__(
        self,
        store_url: str,
        checkpoint_dir: str | os.PathLike[str],
        job_id: str,
        attempt: int,
        sync_interval_s: float = 60.0,
        keep: int = 3,
    ):
        self.store = Store.open(store_url, create=True)
        self.dir = Path(checkpoint_dir).absolute()
        self.job_id, self.attempt = job_id, attempt
        self.sync_interval_s, self.keep = sync_interval_s, keep
        self.fenced = False
        self.last_info: SnapshotInfo | None = None  # the latest sync's result, for logs and tests
        self.durable: str | None = None  # the newest snapshot known to be in the store
        self._synced_sig: frozenset | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._deadline: float | None = None  # set by a notice

    async def before_start(self, env: dict[str, str]) -> None:
        """Replace the directory's contents with the newest snapshot that verifies.

        The store wins over local files: on a fresh instance the directory is empty anyway, and
        after a crash its files may be older or torn. What the directory held that is not the
        snapshot's (user files, temp files, symlinks) is moved beside it, never deleted, and
        said so in one line. A store that cannot be read raises StoreError: starting the job
        from scratch would silently throw its progress away.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            info = await restore(self.store, self.job_id, self.dir, fallback=True, replace=True)
        except NoSnapshot:
            log.info(
                "no snapshot of job %s in %s yet: starting with %s as it is",
                self.job_id,
                self.store.url,
                self.dir,
            )
        else:
            self.durable = info.snapshot
            if info.kept_in:
                log.warning("%s", info.kept_line())
            log.info(
                "restored snapshot %s of job %s (%d files, %d bytes) into %s",
                info.snapshot,
                self.job_id,
                info.files,
                info.bytes,
                self.dir,
            )
        self._synced_sig = signature(scan(self.dir))
        env["SPOTRUN_CHECKPOINT_DIR"] = str(self.dir)

    async def while_running(self) -> None:
        last_sync, previous = time.monotonic(), self._synced_sig
        while not self.fenced:
            await asyncio.sleep(POLL_S)
            current = signature(await asyncio.to_thread(scan, self.dir))
            settled = current == previous  # unchanged for a poll: renames are done, writes paused
            due = time.monotonic() - last_sync >= self.sync_interval_s
            previous = current
            if current != self._synced_sig and (settled or due):
                await self._sync_in_task(progressive=False)
                last_sync = time.monotonic()

    async def on_notice(self, notice: Notice, budget_s: float | None) -> None:
        """Flush now, newest file first; an in-flight periodic sync is cancelled (its chunks are kept)."""
        self._deadline = _deadline(notice, budget_s)
        if self._task and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})
        budget = None if budget_s is None else max(budget_s - NOTICE_MARGIN_S, 0.1)
        try:
            await asyncio.wait_for(self._sync(progressive=True), budget)
        except TimeoutError:
            log.warning(
                "notice budget of %.1fs ran out mid-flush; the newest files published so far stand", budget_s
            )

    async def after_exit(self, returncode: int) -> None:
        """The final snapshot, by the notice's deadline if there was one; the last line says
        which snapshot a restart resumes from."""
        self.last_info = None
        try:
            async with asyncio.timeout(_left(self._deadline)):
                if self._task and not self._task.done():
                    await asyncio.wait({self._task})
                problem = await self._sync(progressive=False, final=True)
        except TimeoutError:  # unless only the retention after the snapshot was cut short
            problem = None if self.last_info is not None else "the notice's deadline came first"
        if self.fenced:
            return
        if problem is not None:
            log.error(
                "the final snapshot of job %s was lost (%s); %s",
                self.job_id, problem, self._durable_line(),
            )  # fmt: skip
        else:
            log.info("%s", self._durable_line())

    def _durable_line(self) -> str:
        if self.durable is None:
            return f"no snapshot of job {self.job_id} is in {self.store.url}: a restart begins from scratch"
        return f"the last durable snapshot of job {self.job_id} is {self.durable}: a restart resumes from it"

    async def _sync_in_task(self, progressive: bool) -> None:
        """Run a sync as its own task so on_notice can cancel it without ending while_running."""
        self._task = asyncio.create_task(self._sync(progressive))
        await asyncio.wait({self._task})

    async def _sync(self, progressive: bool, final: bool = False) -> str | None:
        """One snapshot; what went wrong, if anything (logged already unless `final`)."""
        if self.fenced:
            return None
        async with self._lock:
            sig = signature(await asyncio.to_thread(scan, self.dir))
            try:
                info = await self.store.snapshot(
                    self.job_id, self.attempt, self.dir, progressive=progressive, published=self._published
                )
            except Fenced as exc:
                self.fenced = True
                log.error("%s", exc)
                return str(exc)
            except (StoreError, OSError) as exc:
                if not final:
                    log.warning("checkpoint sync failed, will retry: %s", exc)
                return str(exc)
            self.last_info = info
            if not info.skipped:
                self._synced_sig = sig
            if info.published and self.keep:
                with contextlib.suppress(StoreError):
                    await self.store.prune(self.job_id, self.keep)
            elif not info.published:
                log.debug("no snapshot published: %s", info.note)
            return None

    def _published(self, info: SnapshotInfo) -> None:
        """Called at each publish, a progressive one too: that snapshot is durable now."""
        self.durable = info.id


class OutputsSync:
    """Uploads each finished output file once; exposes earlier attempts' outputs read-only.

    Each upload's modification time is kept beside it (`mtimes/`), because scripts pick "the
    newest checkpoint" by it: restored outputs carry their original times, not the download's.
    """

    PREVIOUS = "_previous"

    def __init__(
        self,
        store_url: str,
        outputs_dir: str | os.PathLike[str],
        job_id: str,
        attempt: int,
        settle_s: float = 2.0,
        restart_dir: str | os.PathLike[str] | None = None,
    ):
        self.store = Store.open(store_url, create=True)
        self.dir = Path(outputs_dir).absolute()
        self.restart_dir = None if restart_dir is None else Path(restart_dir).absolute()
        self.job_id, self.attempt, self.settle_s = job_id, attempt, settle_s
        self.uploaded: set[str] = set()
        self._lock = asyncio.Lock()
        self._deadline: float | None = None  # set by a notice

    def _prefix(self, attempt: int, what: str = "outputs") -> str:
        return f"{job_prefix(self.job_id)}/{what}/attempt-{attempt}"

    async def before_start(self, env: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        previous = self.dir / self.PREVIOUS
        objects = await self.store.backend.list(f"{job_prefix(self.job_id)}/outputs")
        _set_writable(previous, True)
        for obj in objects:
            attempt_part, _, rel = obj.key.split("/outputs/", 1)[1].partition("/")
            if not attempt_part.startswith("attempt-") or attempt_part == f"attempt-{self.attempt}":
                continue
            try:
                target = previous / attempt_part / safe_relpath(rel)
            except HostileManifest:
                log.warning("not restoring output %r: its path would escape %s", obj.key, previous)
                continue
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                await self.store.backend.download(obj.key, target)
                await self._keep_mtime(f"{job_prefix(self.job_id)}/mtimes/{attempt_part}/{rel}", target)
        _set_writable(previous, False)
        if objects:
            log.info("outputs of earlier attempts of job %s are under %s (read-only)", self.job_id, previous)
        env["SPOTRUN_OUTPUTS_DIR"] = str(self.dir)
        env["SPOTRUN_PREVIOUS_OUTPUTS"] = str(previous)
        if self.restart_dir is not None:
            await asyncio.to_thread(_merge_attempts, previous, self.restart_dir)
            env["SPOTRUN_RESTART_DIR"] = str(self.restart_dir)
            log.info("earlier attempts' outputs, newest last, are in %s", self.restart_dir)

    async def _keep_mtime(self, key: str, target: Path) -> None:
        recorded = await self.store.backend.get(key)
        with contextlib.suppress(ValueError, OSError):
            if recorded is not None:
                ns = int(recorded)
                os.utime(target, ns=(ns, ns))

    async def while_running(self) -> None:
        while True:
            await asyncio.sleep(POLL_S * 2)
            await self._upload(finished_only=True)

    async def on_notice(self, notice: Notice, budget_s: float | None) -> None:
        """Upload every finished output now, newest first.

        A file still being written is left for `after_exit`: uploads are write-once, so a torn
        upload now would block the complete file later.
        """
        self._deadline = _deadline(notice, budget_s)
        budget = None if budget_s is None else max(budget_s - NOTICE_MARGIN_S, 0.1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._upload(finished_only=True), budget)

    async def after_exit(self, returncode: int) -> None:
        """The command has exited, so every file left is complete: upload them all, by the
        notice's deadline if there was one, and name any that did not make it."""
        problem = "the store refused them"
        try:
            async with asyncio.timeout(_left(self._deadline)):
                await self._upload(finished_only=False)
        except TimeoutError:
            problem = "the notice's deadline came first"
        files = await asyncio.to_thread(scan, self.dir, frozenset({self.PREVIOUS}))
        lost = sorted(f.rel for f in files if f.rel not in self.uploaded)
        if lost:
            shown = ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            log.error("%d outputs of job %s were not uploaded (%s): %s", len(lost), self.job_id, problem, shown)

    def _finished(self, f: LocalFile, now: float) -> bool:
        read_only = not f.st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        return read_only or now - f.st.st_mtime >= self.settle_s

    async def _upload(self, finished_only: bool) -> None:
        async with self._lock:
            now = time.time()
            files = await asyncio.to_thread(scan, self.dir, frozenset({self.PREVIOUS}))
            for f in sorted(files, key=lambda f: -f.st.st_mtime_ns):
                if f.rel in self.uploaded or (finished_only and not self._finished(f, now)):
                    continue
                key = f"{self._prefix(self.attempt)}/{f.rel}"
                try:
                    created = await self.store.backend.put(key, f.path, create=True)
                except StoreError as exc:
                    if finished_only:
                        log.warning("output %s not uploaded yet: %s", f.rel, exc)
                    else:
                        log.error("output %s not uploaded: %s", f.rel, exc)
                    if isinstance(exc, StoreUnavailable):
                        break  # the rest would wait as long again for the same answer
                    continue
                self.uploaded.add(f.rel)
                with contextlib.suppress(StoreError):
                    await self.store.backend.put(
                        f"{self._prefix(self.attempt, 'mtimes')}/{f.rel}", str(f.st.st_mtime_ns).encode(), create=True
                    )
                await self.store.backend.flush()
                if not created:
                    log.warning(
                        "output %s was already uploaded by this attempt; the first upload stands", f.rel
                    )
                else:
                    log.info("uploaded output %s (%d bytes)", f.rel, f.st.st_size)


def _merge_attempts(previous: Path, dest: Path) -> None:
    """Every attempt's outputs in one directory, oldest attempt first so the newest wins a name."""
    dest.mkdir(parents=True, exist_ok=True)
    attempts = sorted((p for p in previous.glob("attempt-*") if p.name[8:].isdigit()), key=lambda p: int(p.name[8:]))
    for attempt in attempts:
        for src in attempt.rglob("*"):
            if src.is_file():
                target = dest / src.relative_to(attempt)
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
                shutil.copy2(src, target)
                target.chmod(0o644)
                os.utime(target, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns))


def _set_writable(root: Path, writable: bool) -> None:
    """Earlier attempts' outputs are read-only to the job; unlocked only while we add to them."""
    if not root.exists():
        return
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755 if writable else 0o555)
        else:
            path.chmod(0o644 if writable else 0o444)
