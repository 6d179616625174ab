"""The dependency-free examples reclaimed by the real agent: train.py resumes exactly, the broken one restarts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .reclaim import RECLAIMED, example_cmd, reclaim_when, run_to_end


@pytest.mark.parametrize("script, resumes", [("train.py", True), ("broken_no_resume.py", False)])
def test_reclaim_under_the_agent_then_rerun(ckpt_env, tmp_path, script, resumes):
    reference = tmp_path / "reference.json"
    run_to_end(example_cmd(script, "--output", str(reference)),
               {**ckpt_env, "SPOTRUN_CHECKPOINT_DIR": str(tmp_path / "ref-ckpt")})

    output = tmp_path / "result.json"
    slow = example_cmd(script, "--step-time", "0.1", "--output", str(output))
    code, log = reclaim_when(slow, ckpt_env, "step 10 ", via="agent")
    assert code == RECLAIMED, log
    saved = int(re.search(r"notice: saved step (\d+)", log).group(1))
    assert saved >= 10 and not output.exists()

    Path(ckpt_env["SPOTRUN_NOTICE_FILE"]).unlink(missing_ok=True)
    rerun = run_to_end(example_cmd(script, "--output", str(output)), ckpt_env, attempt=2)
    start = saved + 1 if resumes else 0
    assert f"attempt 2: starting at step {start} of 300" in rerun.stdout
    assert json.loads(output.read_text()) == json.loads(reference.read_text())
