"""`spotrun exec`: run a command under the agent, so a reclaim notice reaches it in time.

Only typer is imported at module level: this command starts on every fresh spot instance, and
everything it needs beyond that is imported once the options are known to be valid.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from spotrun.cli.app import app
from spotrun.cli.common import duration_arg, fail

if TYPE_CHECKING:
    from spotrun.agent.hooks import AgentHook
    from spotrun.agent.supervisor import SupervisorOptions
    from spotrun.notices.detect import WatchOptions

EXEC_HELP = """Run COMMAND and pass a spot reclaim notice on to it.

The agent watches the cloud's notice endpoint (detected automatically), and on a reclaim
notice it writes the notice file ($SPOTRUN_NOTICE_FILE, JSON), sends --signal to the command's
whole process group, and SIGKILLs the group --kill-margin before the deadline if it is still
running. Rebalance and maintenance notices are only written to the notice file.

The command sees $SPOTRUN_NOTICE_FILE, $SPOTRUN_JOB_ID, $SPOTRUN_ATTEMPT and $SPOTRUN_SIGNAL;
a shell script can `source "$SPOTRUN_NOTICE_FILE.env"` for $SPOTRUN_DEADLINE once notified.
The metadata endpoint the agent watches is exported as $SPOTRUN_METADATA_URL and in the cloud's
own variable ($AWS_EC2_METADATA_SERVICE_ENDPOINT, $GCE_METADATA_HOST), so a script's own poller
and the clouds' SDKs ask the same endpoint. Signals sent to the agent (TERM, INT, HUP, USR1,
USR2) are passed on to the command.

Without --job-id the job id is derived from the command, --checkpoint-dir and --store, so the
same `spotrun exec` on the next machine finds this one's snapshots; it is printed at start.

Exit status: the command's own; 75 when it was stopped because of a notice (resume it);
127 when the command does not exist; 128+N when signal N killed it.

Examples:

  spotrun exec -- python train.py --epochs 10

  spotrun exec --signal INT --kill-margin 10s -- python train.py

  spotrun exec --provider file --watch-file /tmp/reclaim -- ./job.sh   # then: touch /tmp/reclaim

  spotrun exec --signal none --checkpoint-dir /mnt/checkpoint -- python train.py   # it polls the notice itself
"""


def _signal_arg(text: str) -> str:
    from spotrun.agent.signals import parse_signal

    if text.strip().lower() == "none":
        return "none"
    try:
        return parse_signal(text).name
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command(
    "exec",
    help=EXEC_HELP,
    context_settings={"allow_interspersed_args": False},
    no_args_is_help=True,
)
def exec_(
    command: list[str] = typer.Argument(..., metavar="COMMAND", help="The command to run, after `--`."),
    provider: str = typer.Option(
        "auto", "--provider",
        help="Where notices come from: auto|aws|gcp|azure|alibaba|eci|kubernetes|file|none. "
        "`auto` detects the cloud; `none` only supervises.",
    ),
    metadata_url: str | None = typer.Option(
        None, "--metadata-url", help="The metadata endpoint's base URL (an emulator's, in tests)."
    ),
    allow_imdsv1: bool = typer.Option(
        False, "--allow-imdsv1", help="AWS: fall back to IMDSv1 when no token can be had."
    ),
    watch_file: Path | None = typer.Option(
        None, "--watch-file",
        help="A file whose appearance is a reclaim notice (JSON with deadline/action, or empty).",
    ),
    poll_interval: float | None = typer.Option(
        None, "--poll-interval", parser=duration_arg,
        help="Time between polls of a polled source (default: each source's own).",
    ),
    k8s_grace: float = typer.Option(
        30.0, "--k8s-grace", parser=duration_arg,
        help="Kubernetes: the pod's termination grace period; SIGTERM + this is the deadline.",
    ),
    azure_vm_name: str | None = typer.Option(
        None, "--azure-vm-name", help="Azure: only events for this VM (default: this machine's)."
    ),
    notice_file: Path | None = typer.Option(
        None, "--notice-file", envvar="SPOTRUN_NOTICE_FILE",
        help="Where to write the notice (default: a per-job file in the temp directory).",
    ),
    signal_name: str = typer.Option(
        "SIGTERM", "--signal", callback=_signal_arg,
        help="The signal sent on a notice: TERM, INT (a KeyboardInterrupt in Python), USR1, a number, or "
        "`none` for a command that watches $SPOTRUN_NOTICE_FILE or the metadata endpoint itself.",
    ),
    on_notice: str | None = typer.Option(
        None, "--on-notice",
        help="A shell command started (not awaited) on a notice; it sees $SPOTRUN_DEADLINE.",
    ),
    kill_margin: float = typer.Option(
        5.0, "--kill-margin", parser=duration_arg,
        help="SIGKILL the command this long before the deadline (e.g. 5s).",
    ),
    grace: float = typer.Option(
        30.0, "--grace", parser=duration_arg,
        help="SIGKILL this long after a notice that gives no deadline (e.g. 30s).",
    ),
    signal_rebalance: bool = typer.Option(
        False, "--signal-rebalance", help="Also stop the command on rebalance and maintenance notices."
    ),
    ack: bool = typer.Option(
        True, "--ack/--no-ack",
        help="Acknowledge the notice (Azure StartRequests) once the command stopped and state is saved.",
    ),
    job_id: str | None = typer.Option(
        None, "--job-id", envvar="SPOTRUN_JOB_ID",
        help="The job's id, passed on as $SPOTRUN_JOB_ID and naming its snapshots (default: derived from "
        "the command, --checkpoint-dir and --store, the same on the next machine).",
    ),
    attempt: int = typer.Option(
        1, "--attempt", envvar="SPOTRUN_ATTEMPT", min=1,
        help="Which attempt this is, passed on as $SPOTRUN_ATTEMPT.",
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir",
        help="Restore the newest snapshot here before the command starts, sync it to --store while "
        "it runs, flush it on a notice. Exported as $SPOTRUN_CHECKPOINT_DIR.",
    ),
    store: str | None = typer.Option(
        None, "--store", envvar="SPOTRUN_STORE",
        help="Where snapshots live: file://, s3://bucket/prefix, gs://, az:// (default: under $SPOTRUN_HOME).",
    ),
    sync_interval: float = typer.Option(
        60.0, "--sync-interval", parser=duration_arg,
        help="Sync the checkpoint directory at least this often (and soon after each completed file).",
    ),
    keep: int = typer.Option(3, "--keep", min=1, help="Snapshots of this job to keep in the store."),
    outputs_dir: Path | None = typer.Option(
        None, "--outputs-dir",
        help="Upload each finished file here to --store, never overwritten; earlier attempts' outputs "
        "appear under _previous/. Exported as $SPOTRUN_OUTPUTS_DIR.",
    ),
    status_store: str | None = typer.Option(
        None, "--status-store", envvar="SPOTRUN_STATUS_STORE",
        help="Report to a controller through this store: a heartbeat, the notice and the exit status "
        "(docs/store-format.md, status records). Cloud providers pass it; no inbound port needed.",
    ),
    status_every: float = typer.Option(
        5.0, "--status-every", parser=duration_arg, help="Heartbeat period of --status-store."
    ),
    log_file: Path | None = typer.Option(
        None, "--log-file",
        help="With --status-store: ship this file (where the machine's output goes) to the store as it "
        "grows, every heartbeat, on the notice and at the end, so `spotrun logs` has it after the machine "
        "is gone. The AWS boot script passes its log.",
    ),
    restart_dir: Path | None = typer.Option(
        None, "--restart-dir",
        help="Also copy earlier attempts' outputs (needs --outputs-dir) into this one directory, newest "
        "attempt last, modification times kept: Valohai's `_restart` input. Exported as $SPOTRUN_RESTART_DIR.",
    ),
    exit_file: Path | None = typer.Option(
        None, "--exit-file",
        help="Write the agent's exit status here (JSON) the moment the command ends, before the final "
        "sync: whoever runs the agent learns a finished command's outcome even if the machine or the "
        "agent goes before the agent exits. The local provider uses it.",
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Log every poll and decision."),
) -> None:
    import asyncio
    import logging
    import signal as signals

    from spotrun.agent.supervisor import SupervisorOptions
    from spotrun.notices.detect import WatchOptions

    _setup_logging(logging.DEBUG if verbose else logging.INFO)
    if job_id is None:
        job_id = default_job_id(command, checkpoint_dir, outputs_dir, store)
        logging.getLogger("spotrun.agent").info(
            "job id %s (derived from the command, checkpoint dir and store; --job-id sets one)", job_id)
    watch = WatchOptions(
        provider=provider, metadata_url=metadata_url, allow_imdsv1=allow_imdsv1,
        watch_file=watch_file, poll_interval=poll_interval, kubernetes_grace_s=k8s_grace,
        azure_vm_name=azure_vm_name,
    )
    options = SupervisorOptions(
        notice_file=notice_file or Path(tempfile.gettempdir()) / f"spotrun-{job_id}.notice.json",
        job_id=job_id, attempt=attempt, on_notice=on_notice,
        signal=None if signal_name == "none" else signals.Signals[signal_name],
        kill_margin=kill_margin, grace=grace, signal_rebalance=signal_rebalance, ack=ack,
        exit_file=exit_file,
    )
    hooks: list[AgentHook] = []
    try:
        if restart_dir is not None and outputs_dir is None:
            raise ValueError("--restart-dir needs --outputs-dir: earlier attempts' outputs are what it holds")
        hooks = _store_hooks(checkpoint_dir, outputs_dir, store, options, sync_interval, keep, restart_dir)
        if status_store:  # last: its exit record is written once the final sync is done (`ended` before it)
            from spotrun.providers.status import StatusHook

            hooks.append(StatusHook(status_store, job_id, attempt, status_every, log_file))
        elif log_file is not None:
            raise ValueError("--log-file needs --status-store: the log goes where the status record goes")
        code = asyncio.run(_supervise(command, watch, options, hooks))
    except ValueError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C while detecting the cloud, before the command started
        code = 128 + signals.SIGINT
    if hooks:
        _leave_abandoned_store_calls(code)
    raise typer.Exit(code)


def _leave_abandoned_store_calls(code: int) -> None:
    """Exit now if a store call given up at its deadline still runs: a normal exit would join
    its thread, for minutes against a store that never answers, past the notice's deadline."""
    import logging
    import os
    import sys

    from spotrun.store.backend import abandoned_calls

    if abandoned_calls():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _store_hooks(
    checkpoint_dir: Path | None, outputs_dir: Path | None, store: str | None,
    options: SupervisorOptions, sync_interval: float, keep: int, restart_dir: Path | None = None,
) -> list[AgentHook]:
    """The checkpoint and outputs hooks the options ask for; the store is imported only then."""
    if checkpoint_dir is None and outputs_dir is None:
        if store:
            raise ValueError("--store needs --checkpoint-dir or --outputs-dir to say what to keep there")
        return []
    from spotrun.paths import default_store_url
    from spotrun.store import CheckpointSync, OutputsSync, StoreError

    url = store or default_store_url()
    hooks: list[AgentHook] = []
    try:
        if checkpoint_dir is not None:
            hooks.append(CheckpointSync(url, checkpoint_dir, options.job_id, options.attempt, sync_interval, keep))
        if outputs_dir is not None:
            hooks.append(OutputsSync(url, outputs_dir, options.job_id, options.attempt, restart_dir=restart_dir))
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    return hooks


async def _supervise(
    command: list[str], watch: WatchOptions, options: SupervisorOptions, hooks: list[AgentHook]
) -> int:
    """The one place the CLI's options become watchers and a supervisor."""
    from spotrun.agent.supervisor import Supervisor
    from spotrun.notices.detect import make_watchers, metadata_env

    watchers = await make_watchers(watch)
    options.env.update(metadata_env([w.provider for w in watchers], watch.metadata_url))
    return await Supervisor(command, options, watchers, hooks).run()


def default_job_id(command: list[str], checkpoint_dir: Path | None, outputs_dir: Path | None, store: str | None) -> str:
    """The same on every machine that runs the same `spotrun exec`: the paths as given, not
    resolved, so a next machine with another home directory still derives it."""
    import hashlib
    import json

    key = json.dumps([command, str(checkpoint_dir or ""), str(outputs_dir or ""), store or ""])
    return f"job-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _setup_logging(level: int) -> None:
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    from spotrun.agent.supervisor import LOG_PREFIX

    handler.setFormatter(logging.Formatter(f"{LOG_PREFIX} %(message)s"))
    root = logging.getLogger("spotrun")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
