"""Fixtures shared by every part's tests. Parts keep their own fixtures in tests/<part>/conftest.py."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def spotrun_cmd() -> list[str]:
    """How a test runs the real CLI in a child process (same interpreter as the tests)."""
    return [sys.executable, "-m", "spotrun"]


@pytest.fixture
def spotrun_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private SPOTRUN_HOME so no test touches the user's real one."""
    home = tmp_path / "spotrun-home"
    home.mkdir()
    monkeypatch.setenv("SPOTRUN_HOME", str(home))
    return home


@pytest.fixture
def pg_url() -> str | None:
    return os.environ.get("SPOTRUN_TEST_PG_URL")
