"""Fixtures: a real `spotrun exec` process per test, cleaned up with everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import Agent


@pytest.fixture
def agent(spotrun_cmd: list[str], tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(args: list[str], command: list[str]) -> Agent:
        started.append(Agent(spotrun_cmd, args, command, tmp_path))
        return started[-1]

    yield start
    for a in started:
        a.close()
    for ready in tmp_path.rglob("ready"):  # commands outlive a killed agent: they have their own group
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                kill(int(ready.read_text()), signal.SIGKILL)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path
