"""The boot script (EC2 user data) that turns a bare VM into one attempt of a job.

It installs spotrun, fetches the job's workdir from the store, and runs setup and the job under
`spotrun exec`, which hears the reclaim notice, syncs checkpoints and reports to the controller
through the status record in the store. When the agent exits the machine powers itself off,
and `InstanceInitiatedShutdownBehavior=terminate` turns that into termination: nothing is left
running or billed. The script holds no secret: the instance reads the store with its IAM role
(a wheelhouse install carries a pre-signed URL that can read the wheels and nothing else).

`SPOTRUN_VM_ROOT` and `SPOTRUN_METADATA_URL` are set only by the VM runner (tests, `spotrun demo
--cloud aws`), which plays the VM on this machine: the same script then keeps its files under a
scratch directory, asks the IMDS emulator, and leaves the power-off to the runner.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

# Cloud-init runs user data once per instance, as root, with a minimal PATH.
_TEMPLATE = """#!/bin/bash
# spotrun boot script: job {job_id}, attempt {attempt}. Written by spotrun {version}; holds no secrets.
set -uo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
ROOT="${{SPOTRUN_VM_ROOT:-/var/lib/spotrun}}"
mkdir -p "$ROOT/work" "$ROOT/tmp"
exec >>"$ROOT/boot.log" 2>&1
power_off() {{
  echo "[spotrun boot] done (status $1); powering off"
  [ -n "${{SPOTRUN_VM_ROOT:-}}" ] || shutdown -h now || poweroff
}}
trap 'power_off $?' EXIT
echo "[spotrun boot] $(date -u +%FT%T.%3NZ) start"
{install}
echo "[spotrun boot] $(date -u +%FT%T.%3NZ) spotrun installed: $("$PY" -m spotrun --version 2>&1 | tail -1)"
{fetch}
cd "$ROOT/work"
export TMPDIR="$ROOT/tmp"
{env}
export SPOTRUN_SETUP={setup} SPOTRUN_RUN={run}
"$PY" -m spotrun exec --provider aws ${{SPOTRUN_METADATA_URL:+--metadata-url "$SPOTRUN_METADATA_URL"}} \\
  --job-id {job_id} --attempt {attempt} --status-store {status_store} --log-file "$ROOT/boot.log" {agent_args} \\
  -- bash -c 'if [ -n "$SPOTRUN_SETUP" ]; then bash -c "$SPOTRUN_SETUP" || exit $?; fi; exec bash -c "$SPOTRUN_RUN"'
"""


@dataclass(frozen=True)
class BootPlan:
    job_id: str
    attempt: int
    run: str
    status_store: str
    install: str  # see `install_lines`
    version: str
    setup: str | None = None
    workdir_key: str | None = None  # `workdirs/<digest>.tar.gz` in `status_store`
    env: dict[str, str] = field(default_factory=dict)
    agent_args: tuple[str, ...] = ()
    wheelhouse_url: str | None = None  # a pre-signed GET of the wheelhouse tar: a capability to read wheels, not a credential
    store: str | None = None  # the job's checkpoint store ($SPOTRUN_STORE), read with the instance's IAM role


_VENV = 'PY="$ROOT/venv/bin/python"\n[ -x "$PY" ] || python3 -m venv "$ROOT/venv" || exit 90\n'
_PIP = '"$ROOT/venv/bin/pip" install -q --disable-pip-version-check'
# The wheelhouse is one tar in the store, fetched with the standard library before spotrun exists.
# (The image's python3 may predate tarfile's extraction filters, 3.11.4.)
_FETCH_WHEELS = """python3 -c 'import sys, tarfile, urllib.request
safe = {{"filter": "data"}} if hasattr(tarfile, "data_filter") else {{}}
with urllib.request.urlopen(sys.argv[1], timeout=60) as r, tarfile.open(fileobj=r, mode="r|") as t: t.extractall(sys.argv[2], **safe)' {url} "$ROOT/wheels" || exit 93"""


def install_lines(install: str, wheelhouse_url: str | None = None) -> str:
    """`python:<path>`: the image has spotrun. `pip:<requirement>`: from PyPI (or your index).
    `wheelhouse:<dir>`: the controller's wheels (spotrun and every dependency), from the store."""
    kind, _, arg = install.partition(":")
    if kind == "python" and arg:
        return f"PY={shlex.quote(arg)}"
    if kind == "pip" and arg:
        return f"{_VENV}{_PIP} {shlex.quote(arg)} || exit 91"
    if kind == "wheelhouse" and arg and wheelhouse_url:
        fetch = _FETCH_WHEELS.format(url=shlex.quote(wheelhouse_url))
        return f'{_VENV}mkdir -p "$ROOT/wheels"\n{fetch}\n{_PIP} --no-index --find-links "$ROOT/wheels" spotrun || exit 91'
    raise ValueError(
        f"aws install {install!r}: use pip:<requirement> (e.g. pip:spotrun==0.1.0), python:<path> or wheelhouse:<dir>"
    )


def render(plan: BootPlan) -> str:
    q = shlex.quote
    fetch = (
        f'"$PY" -m spotrun.providers.aws.boot {q(plan.status_store)} {q(plan.workdir_key)} "$ROOT/work" || exit 92'
        if plan.workdir_key else ""
    )
    env = "\n".join(f"export {k}={q(v)}" for k, v in sorted({**plan.env, **({"SPOTRUN_STORE": plan.store} if plan.store else {})}.items()))
    return _TEMPLATE.format(
        job_id=q(plan.job_id), attempt=plan.attempt, version=plan.version, install=install_lines(plan.install, plan.wheelhouse_url),
        fetch=fetch, env=env, setup=q(plan.setup or ""), run=q(plan.run), status_store=q(plan.status_store),
        agent_args=" ".join(q(a) for a in plan.agent_args),
    )
