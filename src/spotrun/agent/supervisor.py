"""The agent's supervisor: runs the user's command and turns a cloud's notice into a clean stop.

The command runs in its own process group so that one signal reaches every process it started
(shell wrappers, DataLoader workers, `torchrun` ranks), and a watchdog SIGKILLs that group should
the agent die (agent/watchdog.py). On a reclaim notice the supervisor
publishes the notice file, signals the group, lets the hooks make state durable within the
notice's deadline, and SIGKILLs the group just before the machine would vanish, so that the
final sync in `after_exit` runs on a process tree that has stopped writing.

Exit status is the controller's only evidence of what happened: the command's own status when
it ended by itself (0 also when it finished inside a notice's window), 75 (EX_TEMPFAIL, "try
again") when a notice stopped it before it succeeded,
127/126 when it could not be started, 128+N when a signal killed it otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spotrun.agent.hooks import AgentHook
from spotrun.agent.noticefile import clear_notice_file, notice_env, write_notice_file
from spotrun.agent.procgroup import group_alive, group_handles
from spotrun.agent.signals import FORWARDED
from spotrun.agent.watchdog import Watchdog
from spotrun.durations import format_duration
from spotrun.faults import stop_point
from spotrun.notices.base import Notice, NoticeKind, Watcher
from spotrun.sdk.atomic import replace_via_temp

log = logging.getLogger("spotrun.agent")

EXIT_RECLAIMED = 75  # EX_TEMPFAIL: the controller resumes the job instead of counting a failure
LOG_PREFIX = "spotrun:"  # on each agent log line, so `spotrun check` tells them from the command's output
ESCALATION_MARK = "(SIGKILL)"  # in the log line of a command killed at the deadline
EXIT_HOOK_FAILED = 70  # EX_SOFTWARE: preparing the job's state failed; the command never ran
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
_MAX_RESTART_DELAY = 30.0


@dataclass
class SupervisorOptions:
    notice_file: Path
    job_id: str
    attempt: int = 1
    signal: signal.Signals | None = signal.SIGTERM  # None: the notice comes by file and endpoint only
    on_notice: str | None = None  # shell command started (not awaited) on a stopping notice
    kill_margin: float = 5.0  # SIGKILL this long before the deadline
    grace: float = 30.0  # SIGKILL this long after the notice when no deadline is known
    signal_rebalance: bool = False  # also stop the command on rebalance/maintenance notices
    ack: bool = True  # acknowledge the notice (Azure StartRequests) once everything is durable
    env: dict[str, str] = field(default_factory=dict)  # more for the command (the endpoint it can poll)
    exit_file: Path | None = None  # the agent's exit status, written as soon as the command ends


def _describe(notice: Notice) -> str:
    left = notice.seconds_left()
    if left is None:
        when = "no deadline given"
    else:
        when = f"deadline {notice.deadline:%Y-%m-%d %H:%M:%S%z}, {left:.1f}s left"
    return f"{notice.kind.value} notice from {notice.provider} ({notice.action}, {when})"


def _log_failure(task: asyncio.Task[object], what: str) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("%s failed: %s: %s", what, type(exc).__name__, exc)


class Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        options: SupervisorOptions,
        watchers: Sequence[Watcher] = (),
        hooks: Sequence[AgentHook] = (),
    ) -> None:
        if not command:
            raise ValueError("no command to run: give it after `--`, e.g. spotrun exec -- python x.py")
        self.command = list(command)
        self.options = options
        self.watchers = list(watchers)
        self.hooks = list(hooks)
        # The kubelet's SIGTERM is the Kubernetes watcher's notice, not something to pass on.
        self._forwarded = tuple(
            s for s in FORWARDED
            if not (s == signal.SIGTERM and any(w.provider == "kubernetes" for w in self.watchers))
        )
        self._proc: asyncio.subprocess.Process | None = None
        self._watchdog: Watchdog | None = None
        self._prestart: asyncio.Task[None] | None = None
        self._early_signal: signal.Signals | None = None
        self._stop: tuple[Watcher, Notice] | None = None
        self._heeds_notice = True  # until a signal is sent: told by file alone, it may stop early
        self._stop_task: asyncio.Task[None] | None = None
        self._kill_task: asyncio.Task[None] | None = None
        self._helpers: list[subprocess.Popen[bytes]] = []
        self._env: dict[str, str] = {}

    async def run(self) -> int:
        """Run the command to the end; returns the exit status the agent should exit with."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Watcher, Notice]] = asyncio.Queue()
        try:
            self.options.notice_file.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(self.options.notice_file.parent, os.W_OK):
                raise PermissionError(13, "the directory is not writable")
            clear_notice_file(self.options.notice_file)
        except OSError as exc:
            raise ValueError(
                f"cannot use the notice file {self.options.notice_file}: {exc.strerror or exc} "
                "(choose another with --notice-file)"
            ) from None
        for sig in self._forwarded:
            loop.add_signal_handler(sig, self._on_agent_signal, sig)
        watching = [asyncio.create_task(self._watch(w, queue)) for w in self.watchers]
        await asyncio.sleep(0)  # each watcher takes its first step (Kubernetes: owns SIGTERM now)
        try:
            code = await self._supervise(queue)
            if self._stop is not None and self.options.ack:
                watcher, notice = self._stop
                try:
                    await watcher.acknowledge(notice)
                except Exception as exc:  # the job is already durable; a failed ack only costs time
                    log.warning("could not acknowledge the notice to %s: %s", watcher.provider, exc)
            return code
        finally:
            for sig in self._forwarded:
                loop.remove_signal_handler(sig)
            for task in watching:
                task.cancel()
            await asyncio.gather(*watching, return_exceptions=True)
            for watcher in self.watchers:
                with contextlib.suppress(Exception):
                    await watcher.aclose()
            if self._watchdog is not None:
                self._watchdog.release(kill=self._running())  # never leave the command behind
            self._report_helpers()

    # -- the command's lifetime ------------------------------------------------------------

    async def _supervise(self, queue: asyncio.Queue[tuple[Watcher, Notice]]) -> int:
        env = self._child_env()
        self._prestart = asyncio.create_task(self._call_hooks_in_order("before_start", env))
        try:
            await self._prestart
        except asyncio.CancelledError:
            if self._early_signal is None:
                raise
            log.info("received %s before the command started; not starting it",
                     self._early_signal.name)
            return 128 + self._early_signal
        except Exception as exc:
            log.error("preparing the job failed, so the command was not started: %s: %s",
                      type(exc).__name__, exc)
            return EXIT_HOOK_FAILED
        self._env = env

        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command, env=env, start_new_session=True
            )
        except FileNotFoundError:
            log.error("command not found: %s (check the name and $PATH, or give its full path)",
                      self.command[0])
            return EXIT_NOT_FOUND
        except OSError as exc:
            log.error("cannot run %s: %s (is it an executable file?)",
                      self.command[0], exc.strerror or exc)
            return EXIT_NOT_EXECUTABLE
        self._watchdog = Watchdog(self._proc.pid)  # start_new_session: the group id is its pid
        providers = ", ".join(w.provider for w in self.watchers) or "nothing"
        log.info(
            "started %s (pid %d, job %s, attempt %d); watching %s",
            " ".join(self.command), self._proc.pid, self.options.job_id, self.options.attempt, providers,
        )

        running = [asyncio.create_task(h.while_running()) for h in self.hooks]
        for hook, task in zip(self.hooks, running):
            what = f"{type(hook).__name__}.while_running"
            task.add_done_callback(lambda t, what=what: _log_failure(t, what))
        handling = asyncio.create_task(self._handle_notices(queue))
        returncode = await self._proc.wait()
        code = self._exit_code(returncode)  # a notice handled from here on finds the command gone
        self._record_exit(code, returncode)
        await self._announce_end(code)
        stop_point("agent-exit-recorded")

        handling.cancel()
        for task in running:
            task.cancel()
        await asyncio.gather(handling, *running, return_exceptions=True)
        if self._kill_task is not None:
            # A shell dies on the signal at once while the program it ran is still saving:
            # the rest of the group gets until the escalation, not a SIGKILL now.
            await self._group_gone(self._kill_task)
            self._kill_task.cancel()
        if self._stop_task is not None:
            await self._stop_task

        await self._call_hooks_in_order("after_exit", code, swallow=True)
        return code

    def _record_exit(self, code: int, returncode: int) -> None:
        """Say at once how the command ended, before the final sync and the agent's own exit: a
        machine reclaimed (or an agent killed) in between must not turn a finished command into
        a lost one that runs, side effects and all, a second time."""
        if self.options.exit_file is None:
            return
        try:
            with replace_via_temp(self.options.exit_file, durable=False) as tmp:  # a process death, not a power cut
                tmp.write_text(json.dumps({"code": code, "returncode": returncode}))
        except OSError as exc:
            log.warning("could not write the exit record %s: %s", self.options.exit_file, exc)

    async def _announce_end(self, code: int) -> None:
        """The same early word through the hooks that report to a controller far away (the status
        record in the store, `command_ended`); each bounds its own wait, as the final sync waits."""
        for hook in self.hooks:
            if (ended := getattr(hook, "command_ended", None)) is not None:
                try:
                    await ended(code)
                except Exception as exc:  # noqa: BLE001  the final sync and the exit record still follow
                    log.error("%s.command_ended failed: %s: %s", type(hook).__name__, type(exc).__name__, exc)

    def _exit_code(self, returncode: int) -> int:
        """After a notice, exit 0 is success only from a command that could not have acted on it:
        one that ignores the notice's signal (or would die of it) finished its work inside the
        window, and reporting it reclaimed would run that work, and its side effects, again. A
        command that catches the signal, or was told by file alone (--signal none), may have
        stopped early in good order (Lightning's SIGTERM handling exits 0): reclaimed, so it
        resumes rather than being recorded done half-way."""
        if self._stop is not None and (returncode != 0 or self._heeds_notice):
            log.info("the command stopped after the notice (its status %d); exiting %d (reclaimed)",
                     returncode, EXIT_RECLAIMED)
            return EXIT_RECLAIMED
        if returncode < 0:
            return 128 - returncode
        return returncode

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SPOTRUN_DEADLINE", None)  # an outer job's deadline is not this command's
        env.update(
            SPOTRUN_NOTICE_FILE=str(self.options.notice_file),
            SPOTRUN_ATTEMPT=str(self.options.attempt),
            SPOTRUN_JOB_ID=self.options.job_id,
            SPOTRUN_SIGNAL=self.options.signal.name if self.options.signal else "none",
        )
        env.update(self.options.env)
        return env

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)  # start_new_session: the group id is the leader's pid

    def _group_alive(self) -> bool:
        return self._proc is not None and group_alive(self._proc.pid)

    async def _group_gone(self, escalation: asyncio.Task[None]) -> None:
        """Wait until no process of the group is left, or a second after the escalation."""
        while self._group_alive() and not escalation.done():
            await asyncio.sleep(0.1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while self._group_alive():
                    await asyncio.sleep(0.1)

    def _running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def _on_agent_signal(self, sig: signal.Signals) -> None:
        if self._running():
            log.info("received %s; passing it on to the command", sig.name)
            self._kill_group(sig)
        elif self._prestart is not None and not self._prestart.done():
            self._early_signal = sig
            self._prestart.cancel()
        else:
            log.info("received %s while finishing up; finishing first", sig.name)

    # -- hooks -----------------------------------------------------------------------------

    async def _call_hooks_in_order(self, method: str, *args: object, swallow: bool = False) -> None:
        for hook in self.hooks:
            try:
                await getattr(hook, method)(*args)
            except Exception as exc:
                if not swallow:
                    raise
                log.error("%s.%s failed: %s: %s", type(hook).__name__, method, type(exc).__name__, exc)

    async def _notify_hooks(self, notice: Notice, budget: float | None, timeout: float) -> None:
        if not self.hooks:
            return
        calls = [h.on_notice(notice, budget) for h in self.hooks]
        try:
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout)
        except TimeoutError:
            log.error("hooks were still saving state after %s; giving up on them",
                      format_duration(timeout))
            return
        for hook, result in zip(self.hooks, results):
            if isinstance(result, Exception):
                log.error("%s.on_notice failed: %s: %s",
                          type(hook).__name__, type(result).__name__, result)

    # -- notices ---------------------------------------------------------------------------

    async def _watch(self, watcher: Watcher, queue: asyncio.Queue[tuple[Watcher, Notice]]) -> None:
        """Feed one watcher's notices to the queue forever; a failing watcher is restarted."""
        delay = 1.0
        while True:
            try:
                async with contextlib.aclosing(watcher.watch()) as notices:
                    async for notice in notices:
                        queue.put_nowait((watcher, notice))
                        delay = 1.0
                log.warning("the %s watcher stopped; restarting it in %.0fs", watcher.provider, delay)
            except Exception as exc:
                log.error(
                    "the %s watcher failed (%s: %s); restarting it in %.0fs",
                    watcher.provider, type(exc).__name__, exc, delay,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RESTART_DELAY)

    async def _handle_notices(self, queue: asyncio.Queue[tuple[Watcher, Notice]]) -> None:
        seen: set[tuple[object, ...]] = set()
        while True:
            watcher, notice = await queue.get()
            key = (notice.provider, notice.kind, notice.action, notice.deadline)
            if key not in seen:  # a restarted watcher reports a standing notice again
                seen.add(key)
                self._on_notice(watcher, notice)

    def _on_notice(self, watcher: Watcher, notice: Notice) -> None:
        what = _describe(notice)
        if not self._running():
            log.info("%s arrived after the command ended; ignoring it", what)
            return
        if self._stop is not None:
            log.info("%s; already stopping the command for an earlier notice", what)
            return
        try:
            write_notice_file(self.options.notice_file, notice)
        except OSError as exc:
            log.error("could not write the notice file %s: %s", self.options.notice_file, exc)
        if notice.kind is not NoticeKind.RECLAIM and not self.options.signal_rebalance:
            log.info("%s: written to %s, command not signalled (--signal-rebalance would stop it)",
                     what, self.options.notice_file)
            return

        self._stop = (watcher, notice)
        left = notice.seconds_left()
        if left is not None and left <= 0:
            log.warning("the notice's deadline has passed already (a stale time?); "
                        "treating it as unknown")
            left = None
        # Short notices (AWS hibernate) still leave the command half of what is left to react.
        if left is None:
            kill_after = self.options.grace
        else:
            kill_after = max(left - self.options.kill_margin, left / 2)
        sending = f"sending {self.options.signal.name} to" if self.options.signal else "not signalling (--signal none)"
        log.info("%s: %s the command; SIGKILL in %s if it is still running",
                 what, sending, format_duration(kill_after))
        if self.options.signal:
            # Read before sending: whether the command can act on it decides what its exit 0 means.
            self._heeds_notice = self._proc is None or group_handles(self._proc.pid, self.options.signal)
            self._kill_group(self.options.signal)
        self._start_helper(notice)
        self._kill_task = asyncio.create_task(self._escalate(kill_after))
        budget = None if left is None else kill_after
        hooks_until = kill_after if left is None else left  # past the deadline nothing is saved
        self._stop_task = asyncio.create_task(self._notify_hooks(notice, budget, hooks_until))

    async def _escalate(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._group_alive():
            log.warning("the command is still running %s after the notice; killing it %s",
                        format_duration(delay), ESCALATION_MARK)
            self._kill_group(signal.SIGKILL)

    def _start_helper(self, notice: Notice) -> None:
        if not self.options.on_notice:
            return
        try:
            helper = subprocess.Popen(
                self.options.on_notice, shell=True, env=self._env | notice_env(notice),
                start_new_session=True,  # not in the group that gets signalled
            )
        except OSError as exc:
            log.error("could not start the --on-notice command: %s", exc)
            return
        log.info("started the --on-notice command (pid %d)", helper.pid)
        self._helpers.append(helper)

    def _report_helpers(self) -> None:
        for helper in self._helpers:
            status = helper.poll()
            if status is None:
                log.info("the --on-notice command (pid %d) is still running; leaving it", helper.pid)
            elif status != 0:
                log.warning("the --on-notice command exited with status %d", status)
