"""A real training process gets a reclaim notice and SIGTERM, saves, exits; the rerun resumes exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spotrun.sdk.checkpoint import list_checkpoints

from .conftest import reference_result
from .reclaim import RECLAIMED, example_cmd, reclaim_when, run_to_end


ARGS = ["--steps", "120", "--every", "1000"]


def loop_cmd(output: Path, step_time: str) -> list[str]:
    return example_cmd("torch_loop.py", *ARGS, "--step-time", step_time, "--output", str(output))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return reference_result("torch_loop", ARGS, tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("via", ["agent", "signal"])
def test_reclaimed_loop_saves_then_resumes_bitwise(ckpt_env, tmp_path, reference, via):

    output = tmp_path / "result.json"
    code, log = reclaim_when(loop_cmd(output, "0.2"), ckpt_env, "step 5 ", via=via)
    assert code == RECLAIMED, log
    saved = int(re.search(r"notice: saved step (\d+)", log).group(1))
    assert saved >= 5
    assert not output.exists()  # no final output from an unfinished run
    assert [step for step, _ in list_checkpoints(ckpt_env["SPOTRUN_CHECKPOINT_DIR"], ext="pt")] == [0, saved]

    Path(ckpt_env["SPOTRUN_NOTICE_FILE"]).unlink(missing_ok=True)  # the next machine has no notice
    resumed = run_to_end(loop_cmd(output, "0"), ckpt_env, attempt=2)
    assert f"attempt 2: starting at step {saved + 1} of 120" in resumed.stdout
    assert json.loads(output.read_text()) == reference
