"""Transformers: a reclaimed Trainer saves and stops; a second process resumes from the checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

from spotrun.hf import resume_checkpoint
from spotrun.sdk.atomic import save_atomic

from .conftest import reference_result
from .reclaim import RECLAIMED, example_cmd, reclaim_when, run_to_end


def test_reclaimed_trainer_resumes_bitwise_in_a_new_process(ckpt_env, tmp_path):
    reference = reference_result("hf_trainer", ["--max-steps", "40", "--every", "1000"], tmp_path)
    output = tmp_path / "result.json"
    args = ["--max-steps", "40", "--every", "1000", "--output", str(output)]
    code, log = reclaim_when(example_cmd("hf_trainer.py", *args, "--step-time", "0.5"), ckpt_env, "step 3")
    assert code == RECLAIMED, log
    saved = int(re.search(r"notice: saved step (\d+)", log).group(1))
    assert 3 <= saved < 40
    assert not output.exists()
    ckpt_dir = Path(ckpt_env["SPOTRUN_CHECKPOINT_DIR"])
    assert resume_checkpoint(ckpt_dir) == str(ckpt_dir / f"checkpoint-{saved}")

    Path(ckpt_env["SPOTRUN_NOTICE_FILE"]).unlink(missing_ok=True)
    resumed = run_to_end(example_cmd("hf_trainer.py", *args), ckpt_env, attempt=2)
    assert f"resuming from {ckpt_dir / f'checkpoint-{saved}'}" in resumed.stdout
    first_step = int(re.search(r"^step (\d+)$", resumed.stdout, re.M).group(1))
    assert first_step == saved + 1
    assert json.loads(output.read_text()) == reference  # same final weights and loss as never reclaimed


def make_checkpoint(root: Path, step: int, files: dict[str, bytes]) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    sizes = {name: len(data) for name, data in files.items()}
    save_atomic(folder / "spotrun-complete.json", json.dumps({"step": step, "files": sizes}))
    return folder


def test_resume_skips_torn_and_unmarked_checkpoints(tmp_path):
    assert resume_checkpoint(tmp_path) is None
    good = make_checkpoint(tmp_path, 20, {"model.safetensors": b"m" * 100, "optimizer.pt": b"o" * 50})
    torn = make_checkpoint(tmp_path, 30, {"model.safetensors": b"m" * 100, "optimizer.pt": b"o" * 50})
    (torn / "optimizer.pt").write_bytes(b"o" * 10)  # a sync that caught the file mid-write
    (tmp_path / "checkpoint-40").mkdir()  # the Trainer is still writing this one: no marker yet
    (tmp_path / "checkpoint-40" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "checkpoint-last").mkdir()
    assert resume_checkpoint(tmp_path) == str(good)
    (good / "model.safetensors").unlink()
    assert resume_checkpoint(tmp_path) is None
