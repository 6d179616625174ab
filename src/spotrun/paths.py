"""Where spotrun keeps its own files: `$SPOTRUN_HOME`, else `~/.spotrun`."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    path = Path(os.environ.get("SPOTRUN_HOME") or Path.home() / ".spotrun")
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_url() -> str:
    """The checkpoint store used when none is given: a local directory, no cloud account needed."""
    return (home() / "store").as_uri()


def default_db_url() -> str:
    return os.environ.get("SPOTRUN_DB_URL") or f"sqlite:///{home() / 'spotrun.db'}"
