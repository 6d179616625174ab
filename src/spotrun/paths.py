"""Where spotrun keeps its own files: `$SPOTRUN_HOME`, else `~/.spotrun`.

Everything there is private to the user (folders 0700, files 0600): the database holds job
specs, logs hold the jobs' output, and the store holds their checkpoints.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter; made if missing, narrowed if wider."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.getuid():
        path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Create `path` (and its folder) readable by its owner only, if it does not exist yet."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600))
    return path


def open_private(path: Path, mode: str = "a") -> IO[Any]:
    """`open(path, mode)` for spotrun's own logs and records: created 0600, never wider."""
    private_file(path)
    return open(path, mode)


def home() -> Path:
    return private_dir(Path(os.environ.get("SPOTRUN_HOME") or Path.home() / ".spotrun"))


def default_store_url() -> str:
    """The checkpoint store used when none is given: a local directory, no cloud account needed."""
    return (home() / "store").as_uri()


def default_db_url() -> str:
    return os.environ.get("SPOTRUN_DB_URL") or f"sqlite:///{home() / 'spotrun.db'}"
