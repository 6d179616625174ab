"""`spotrun demo` end to end, at a quicker pace than a person would watch it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path


def test_demo_survives_reclaims_with_the_same_result(spotrun_cmd: list[str], spotrun_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    proc = subprocess.run(
        [*spotrun_cmd, "demo", "--json", "--steps", "40", "--step-time", "100ms", "--reclaim-every", "3s",
         "--lead-time", "1s", "--home", str(home)],
        capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["completed"] and summary["on_demand_status"] == "SUCCEEDED"
    assert summary["same_result_as_uninterrupted"] is True
    assert summary["attempts"] == summary["reclaims"] + 1
    assert summary["steps"] == 40 and summary["wall_s"] > 0 and summary["uninterrupted_wall_s"] > 0
    assert len(summary["work_lost_steps_per_reclaim"]) <= summary["reclaims"]
    assert (home / "spotrun.db").exists()  # --home keeps the state; SPOTRUN_HOME was not touched
    assert not (spotrun_home / "spotrun.db").exists()


def test_demo_without_a_script_says_what_to_do(spotrun_cmd: list[str], spotrun_home: Path, tmp_path: Path) -> None:
    proc = subprocess.run([*spotrun_cmd, "demo", "--script", str(tmp_path / "nope.py")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())  # the console wraps long lines
    assert "not found; pass --script PATH" in message and "Traceback" not in message


def test_demo_prints_whole_tables_into_a_pipe(spotrun_cmd: list[str], spotrun_home: Path, tmp_path: Path) -> None:
    """The README's first command as CI runs it: no terminal, no COLUMNS; no header or cell is cut to "…"."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run(
        [*spotrun_cmd, "demo", "--steps", "300", "--step-time", "15ms", "--reclaim-every", "3s",
         "--lead-time", "1s", "--home", str(tmp_path / "demo-home")],  # 300 steps: the README's width
        capture_output=True, text=True, timeout=280, env=env, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "…" not in proc.stdout, proc.stdout
    header = next(line for line in proc.stdout.splitlines() if "capacity" in line)
    assert [c.strip() for c in header.strip("┃").split("┃")] == [
        "capacity", "status", "attempt", "step", "reclaims", "lost", "cost", "saved"]
    assert proc.stdout.count("│ 300/300 ") == 2 and re.search(r"same final weights +│ yes", proc.stdout)
