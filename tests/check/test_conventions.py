"""`spotrun check` on scripts written in real platforms' conventions, each judged as a careful
human would: no false PASS (state a next machine would not have), no false FAIL (a resume read
from JSON lines, epochs, a script's own notice poller or file watch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from spotrun.check.isolation import namespaces_work

CONVENTIONS = Path(__file__).parent / "conventions"
PY = sys.executable


def check(*args: str, command: list[str], wait: bool = True):
    argv = [PY, "-m", "spotrun", "check", "--json", "--workdir", str(CONVENTIONS), "--reclaims", "1",
            "--lead-time", "5s", "--seed", "1", *args, "--", *command]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return finish(proc) if wait else proc


def finish(proc: subprocess.Popen) -> tuple[int, dict]:
    out, err = proc.communicate(timeout=600)
    assert out, err
    return proc.returncode, json.loads(out)


def said(verdict: dict, level: str) -> str:
    return "\n".join(f["message"] for f in verdict["findings"] if f["level"] == level)


def passed(code: int, verdict: dict) -> None:
    assert (code, verdict["verdict"]) == (0, "pass"), verdict
    assert verdict["outputs_compared"] and verdict["reclaims"], verdict
    assert all(r["resumed_from"] > 0 for r in verdict["reclaims"]), verdict


def test_valohai_sigint_immutable_outputs_and_restart_input():
    code, verdict = check("--signal", "INT", "--outputs-dir", "outputs", "--restart-dir", "inputs/_restart",
                          "-o", "outputs/result.json", command=[PY, "valohai.py"])
    passed(code, verdict)
    assert verdict["progress_source"] == "step"  # from its {"step": N} JSON lines
    # it saves every 5 steps under random names: only kept modification times lead it to the newest
    assert verdict["reclaims"][0]["lost_steps"] < 5


def test_anycloud_fixed_checkpoint_directory(tmp_path):
    fixed = str(tmp_path / "mnt" / "checkpoint")
    code, verdict = check("--checkpoint-dir", fixed, "-o", "result.json", command=[PY, "anycloud.py", fixed])
    passed(code, verdict)
    assert verdict["reclaims"][0]["lost_steps"] == 0  # it saved on SIGTERM


def test_aws_guide_own_poller_and_epoch_files():
    code, verdict = check("--signal", "none", "--checkpoint-dir", "ckpt", "-o", "result.json", command=[PY, "aws_guide.py"])
    passed(code, verdict)
    assert verdict["progress_source"] == "epoch"
    assert verdict["reclaims"][0]["lost_steps"] <= 1  # its poller heard the emulator: no numbers from file names


def test_eci_fixed_path_made_durable_passes_with_lost_work_told(tmp_path):
    fixed = str(tmp_path / "eci")
    code, verdict = check("--checkpoint-dir", fixed, "-o", "result.json", command=[PY, "eci.py", fixed])
    passed(code, verdict)
    assert verdict["reclaims"][0]["lost_steps"] > 0  # killed by SIGTERM: back to its last save
    assert "work lost" in said(verdict, "warn")


def test_checkpoint_on_local_disk_fails_with_the_path_named(tmp_path):
    """Under a mount namespace the fixed path starts empty, so the script starts over; where the
    kernel forbids namespaces, it resumes from state the store never held. A FAIL either way."""
    fixed = str(tmp_path / "eci")
    code, verdict = check("-o", "result.json", command=[PY, "eci.py", fixed])
    assert (code, verdict["verdict"]) == (1, "fail"), verdict
    isolated = namespaces_work() is None
    assert ("restarted from step 0" if isolated else "although the store held no snapshot") in said(verdict, "fail")
    assert fixed in said(verdict, "fail")  # names where its checkpoint went
    assert ("private mount namespace" in verdict["isolation"]) == isolated


def test_checkpoint_on_local_disk_fails_without_a_namespace(tmp_path):
    fixed = str(tmp_path / "eci")
    code, verdict = check("--isolation", "env", "-o", "result.json", command=[PY, "eci.py", fixed])
    assert (code, verdict["verdict"]) == (1, "fail"), verdict
    assert "although the store held no snapshot" in said(verdict, "fail")
    assert fixed in said(verdict, "fail")
    assert "no mount namespace" in verdict["isolation"]


def test_two_checks_side_by_side_each_right():
    """A file-watching script and one that restores weights but restarts its epochs, at once:
    each hears only its own notices and gets its own verdict."""
    metaflow = check("--signal", "none", "-o", "result.json", command=[PY, "metaflow.py"], wait=False)
    restart = check("-o", "result.json", command=[PY, "restart_epoch.py"], wait=False)
    code, verdict = finish(metaflow)
    passed(code, verdict)
    assert verdict["reclaims"][0]["lost_steps"] == 0  # it saved when the notice file appeared
    code, verdict = finish(restart)
    assert (code, verdict["verdict"]) == (1, "fail"), verdict
    assert "restarted its epoch count at 0" in said(verdict, "fail")
    assert "restores the weights but not where training stood" in said(verdict, "fail")


def test_lightning_with_its_own_model_checkpoint_and_fit_last():
    """Its default bar may print nothing off a terminal: the evidence is then Lightning's
    "Restored all states" line, the global_step in last.ckpt, and the matching outputs."""
    code, verdict = check("--checkpoint-dir", "ckpt", "-o", "result.json", command=[PY, "lightning_own.py"])
    passed(code, verdict)
    reclaim = verdict["reclaims"][0]
    assert reclaim["restore_seen"] and reclaim["saved_step"] == reclaim["resumed_from"]
    if reclaim["at_step"] is None:
        assert reclaim["work_lost"] == "unknown" and "work lost unknown" in said(verdict, "note")


def test_transformers_trainer_with_resume_from_checkpoint():
    code, verdict = check("--checkpoint-dir", "ckpt", "-o", "result.json", command=[PY, "hf_own.py"])
    passed(code, verdict)
    assert verdict["progress_source"] == "bar"  # its tqdm bar, N/40
    assert verdict["reclaims"][0]["saved_step"] % 5 == 0  # trainer_state.json of a checkpoint-N/
