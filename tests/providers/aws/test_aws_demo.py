"""`spotrun demo --cloud aws` end to end: the README's demo on the local AWS, at a quick pace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def test_demo_on_the_local_aws_survives_reclaims(spotrun_cmd: list[str], spotrun_home: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*spotrun_cmd, "demo", "--cloud", "aws", "--json", "--steps", "40", "--step-time", "100ms",
         "--reclaim-every", "3s", "--lead-time", "1s", "--seed", "1", "--home", str(tmp_path / "home")],
        capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["completed"] and summary["on_demand_status"] == "SUCCEEDED"
    assert summary["same_result_as_uninterrupted"] is True
    assert summary["reclaims"] >= 1 and summary["attempts"] == summary["reclaims"] + 1
    assert 0 < summary["cost"] < summary["on_demand_cost"]
    assert (tmp_path / "home" / "aws" / "vms").is_dir()  # instances were booted from their user data


def test_demo_refuses_an_unknown_cloud(spotrun_cmd: list[str], spotrun_home: Path) -> None:
    proc = subprocess.run([*spotrun_cmd, "demo", "--cloud", "gcp"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "use local or aws" in proc.stderr
