"""The package's extras, as the installed metadata states them, and the one line a command says
when its extra is missing (the agent's own install carries none of them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from spotrun.extras import missing

# The stdlib's metadata lookup told that one distribution is absent, as on a bare `pip install spotrun`.
_HIDE = """import importlib.metadata as m, sys
real = m.distribution
def hide(name):
    if name in {hidden!r}:
        raise m.PackageNotFoundError(name)
    return real(name)
m.distribution = hide
sys.argv = ["spotrun", *{argv!r}]
from spotrun.cli import main
main()
"""


def _spotrun_without(hidden: set[str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _HIDE.format(hidden=hidden, argv=list(argv))],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "40"})


def test_the_test_install_has_every_extra_and_all_includes_the_nested_ones() -> None:
    for extra in ("controller", "market", "aws", "emulate", "local-aws", "postgres", "all"):
        assert missing(extra) == [], extra
    assert missing("no-such-extra") == []


def test_a_command_without_its_extra_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    launch = _spotrun_without({"sqlalchemy"}, "launch", "job.yaml")
    assert launch.returncode == 2
    assert launch.stderr.splitlines() == [
        "error: spotrun launch needs the controller extra (sqlalchemy not installed): pip install 'spotrun[controller]'"]
    nested = _spotrun_without({"moto", "boto3"}, "demo", "--cloud", "aws")
    assert nested.stderr.splitlines() == [
        "error: spotrun demo --cloud aws needs the local-aws extra (boto3, moto not installed): "
        "pip install 'spotrun[local-aws]'"]
    group = _spotrun_without({"matplotlib"}, "simulate")
    assert group.stderr.splitlines() == [
        "error: spotrun simulate needs the market extra (matplotlib not installed): pip install 'spotrun[market]'"]
    # The agent asks for none of them (a fresh `pip install -e .` venv runs it: docs/aws.md's wheelhouse).
    agent = _spotrun_without({"sqlalchemy", "numpy", "boto3", "matplotlib", "aiohttp"}, "exec", "--provider", "file",
                             "--watch-file", str(tmp_path / "notice"), "--", "true")
    assert agent.returncode == 0, agent.stderr
