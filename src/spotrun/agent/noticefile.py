"""The notice file: how a command learns about a notice after it started.

A child cannot see its parent's environment change, so the agent publishes the notice as a file
at `$SPOTRUN_NOTICE_FILE` (JSON, `Notice.to_dict()` plus `SPOTRUN_DEADLINE`), and the same facts
as `KEY=value` lines beside it (`<file>.env`) for shell scripts to `source`. Both are replaced
by rename, so a reader sees the old content or the new, never half a file. No fsync: the file
only matters while this machine is alive.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from spotrun.notices.base import Notice
from spotrun.sdk.atomic import replace_via_temp


def env_path(path: Path) -> Path:
    return path.with_name(path.name + ".env")


def notice_env(notice: Notice) -> dict[str, str]:
    """The notice as environment variables, for `--on-notice` commands and the `.env` file."""
    return {
        "SPOTRUN_NOTICE_PROVIDER": notice.provider,
        "SPOTRUN_NOTICE_KIND": notice.kind.value,
        "SPOTRUN_NOTICE_ACTION": notice.action,
        "SPOTRUN_DEADLINE": notice.deadline.isoformat() if notice.deadline else "",
        "SPOTRUN_DEADLINE_EPOCH": f"{notice.deadline.timestamp():.3f}" if notice.deadline else "",
    }


def _replace(path: Path, text: str) -> None:
    with replace_via_temp(path, durable=False) as tmp:
        tmp.write_text(text)


def write_notice_file(path: Path, notice: Notice) -> None:
    """Publish `notice`; the `.env` file goes first so it exists once the JSON file appears."""
    path.parent.mkdir(parents=True, exist_ok=True)
    env = notice_env(notice)
    _replace(env_path(path), "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    data = notice.to_dict() | {"SPOTRUN_DEADLINE": env["SPOTRUN_DEADLINE"]}
    _replace(path, json.dumps(data, indent=2, default=str) + "\n")


def clear_notice_file(path: Path) -> None:
    """Remove a previous attempt's notice so the new command does not stop at once."""
    path.unlink(missing_ok=True)
    env_path(path).unlink(missing_ok=True)
