"""`spotrun check` end to end: the real CLI, agent, emulator and store, on real scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run_check(workdir: Path, *args: str, command: list[str]) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "spotrun", "check", "--json", "--workdir", str(workdir), *args, "--", *command],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def messages(verdict: dict, level: str) -> str:
    return "\n".join(f["message"] for f in verdict["findings"] if f["level"] == level)


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    work = tmp_path / "job"
    work.mkdir()
    for name in ("train.py", "broken_no_resume.py"):
        shutil.copy(EXAMPLES / name, work / name)
    return work


def script(tmp_path: Path, body: str) -> Path:
    work = tmp_path / "job"
    work.mkdir(exist_ok=True)
    (work / "job.py").write_text(textwrap.dedent(body))
    return work


TRAIN = [sys.executable, "train.py", "--steps", "120", "--step-time", "0.03", "--every", "10", "--output", "result.json"]


def test_good_script_passes_with_evidence(examples):
    code, verdict = run_check(examples, "--reclaims", "2", "--seed", "3", "--lead-time", "5s", "-o", "result.json", command=TRAIN)
    assert verdict["verdict"] == "pass", verdict
    assert code == 0
    assert verdict["finished"] and verdict["outputs_compared"]
    assert len(verdict["reclaims"]) == 2
    for r in verdict["reclaims"]:
        assert r["saw_notice"] is True
        assert r["resumed_from"] > 0  # it did not start over
        assert r["lost_steps"] == 0  # it saved on the notice
    assert verdict["attempts"] == 3


def test_script_that_never_loads_fails_with_diagnosis(examples):
    command = [sys.executable, "broken_no_resume.py", *TRAIN[2:]]
    code, verdict = run_check(examples, "--reclaims", "1", "--seed", "3", "--lead-time", "5s", "-o", "result.json", command=command)
    assert code == 1 and verdict["verdict"] == "fail"
    assert "restarted from step 0 after reclaim 1" in messages(verdict, "fail")
    advice = " ".join(f["advice"] for f in verdict["findings"])
    assert "SPOTRUN_CHECKPOINT_DIR" in advice
    assert verdict["reclaims"][0]["resumed_from"] == 0
    assert verdict["reclaims"][0]["lost_steps"] > 0


def test_crash_on_restart_is_reported(tmp_path):
    work = script(tmp_path, """
        import os, sys, time, spotrun
        spotrun.on_notice(lambda n: None)
        if spotrun.attempt() > 1:
            raise SystemExit("cannot load checkpoint: corrupt state")
        for step in range(200):
            spotrun.report_progress(step)
            time.sleep(0.02)
            if spotrun.should_stop():
                sys.exit(75)
    """)
    code, verdict = run_check(work, "--reclaims", "1", "--seed", "1", "--lead-time", "5s", command=[sys.executable, "job.py"])
    assert code == 1
    assert "crashed when resuming" in messages(verdict, "fail")
    assert "corrupt state" in messages(verdict, "fail")


def test_signal_ignored_is_flagged_but_periodic_saves_can_still_pass(tmp_path):
    work = script(tmp_path, """
        import signal, time, spotrun
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        loaded = spotrun.load_latest()
        start = loaded[1] + 1 if loaded else 0
        for step in range(start, 400):
            spotrun.report_progress(step)
            spotrun.save({"step": step}, step=step)
            time.sleep(0.03)
    """)
    # Reclaim points lie in the middle 80 % of the steps, so 40+ steps (1.2 s+) remain: more
    # than the 1 s the agent waits before SIGKILL with a 2 s lead.
    code, verdict = run_check(work, "--reclaims", "1", "--seed", "2", "--lead-time", "2s", command=[sys.executable, "job.py"])
    assert verdict["reclaims"][0]["saw_notice"] is False
    assert "ignored SIGTERM" in messages(verdict, "warn")
    assert verdict["reclaims"][0]["resumed_from"] > 0
    assert code == 0 and verdict["verdict"] == "pass"


def test_nondeterministic_output_fails_unless_comparison_is_waived(tmp_path):
    work = script(tmp_path, """
        import json, random, sys, time, spotrun
        spotrun.on_notice(lambda n: None)
        loaded = spotrun.load_latest()
        start = loaded[1] + 1 if loaded else 0
        for step in range(start, 120):
            spotrun.report_progress(step)
            time.sleep(0.02)
            if spotrun.should_stop():
                spotrun.save({}, step=step)
                sys.exit(75)
        spotrun.save_atomic("out.json", json.dumps({"noise": random.random()}))
    """)
    args = ["--reclaims", "1", "--seed", "5", "--lead-time", "3s", "-o", "out.json"]
    code, verdict = run_check(work, *args, command=[sys.executable, "job.py"])
    assert code == 1 and "out.json differs" in messages(verdict, "fail")
    code, verdict = run_check(work, *args, "--no-compare-outputs", command=[sys.executable, "job.py"])
    assert code == 0 and verdict["verdict"] == "pass"
    assert "not compared" in messages(verdict, "warn")


def test_baseline_that_hangs_or_fails_is_a_clear_fail(tmp_path):
    work = script(tmp_path, "import time\nprint('step 1', flush=True)\ntime.sleep(600)\n")
    code, verdict = run_check(work, "--timeout", "3s", command=[sys.executable, "job.py"])
    assert code == 1
    assert "fails without any reclaim" in messages(verdict, "fail")
    assert verdict["attempts"] == 0


def test_usage_errors_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "spotrun", "check", "--workdir", str(tmp_path / "missing"), "--", "true"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "spotrun", "check", "--workdir", str(tmp_path), "--signal", "NOPE", "--", "true"],
        capture_output=True, text=True,
    )
    # refused before any run, not blamed on the script after its baseline
    assert proc.returncode == 2 and "not a signal: 'NOPE'" in " ".join(proc.stderr.split()), proc.stderr


def test_errors_piped_are_never_wrapped(tmp_path):
    """CI has no terminal and no COLUMNS: a long path must stay on one line to be copied."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "missing"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run([sys.executable, "-m", "spotrun", "check", "--workdir", str(deep), "--", "true"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert f"error: working directory {deep} does not exist" in proc.stderr.splitlines()


def test_a_script_whose_resume_cannot_be_seen_is_inconclusive_not_failed(tmp_path):
    """No progress printed, nothing restored, the same output either way (pytorch/examples'
    word_language_model, patched or not): the check cannot tell, and says so with exit 3."""
    work = script(tmp_path, """
        import json, time
        time.sleep(3)
        json.dump({"answer": 42}, open("result.json", "w"))
    """)
    code, verdict = run_check(work, "--reclaims", "1", "--seed", "1", "--lead-time", "5s", "-o", "result.json",
                              command=[sys.executable, "job.py"])
    assert (code, verdict["verdict"]) == (3, "inconclusive"), verdict
    assert "cannot tell where the next attempt resumed" in messages(verdict, "inconclusive")
    assert not messages(verdict, "fail")
    advice = " ".join(f["advice"] for f in verdict["findings"])
    assert "report_progress" in advice
