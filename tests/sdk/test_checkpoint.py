"""The framework-free SDK: where checkpoints go, and atomic save / load-newest / keep N."""

from __future__ import annotations

import subprocess
import sys

import pytest

import spotrun
from spotrun.sdk.atomic import TMP_MARKER
from spotrun.sdk.atomic import atomic_path
from spotrun.sdk.checkpoint import prune


@pytest.fixture
def no_agent(monkeypatch, tmp_path):
    for name in ("SPOTRUN_CHECKPOINT_DIR", "SPOTRUN_ATTEMPT", "SPOTRUN_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_fallbacks_without_agent(no_agent):
    path = spotrun.checkpoint_dir()
    assert path.resolve() == (no_agent / "checkpoints").resolve()
    assert path.is_dir()
    assert spotrun.attempt() == 1
    assert spotrun.job_id() is None
    assert spotrun.load_latest() is None


def test_agent_environment_wins(no_agent, monkeypatch):
    monkeypatch.setenv("SPOTRUN_CHECKPOINT_DIR", str(no_agent / "restored" / "ckpt"))
    monkeypatch.setenv("SPOTRUN_ATTEMPT", "3")
    monkeypatch.setenv("SPOTRUN_JOB_ID", "job-42")
    assert spotrun.checkpoint_dir() == no_agent / "restored" / "ckpt"
    assert (no_agent / "restored" / "ckpt").is_dir()
    assert spotrun.attempt() == 3
    assert spotrun.job_id() == "job-42"


def test_bad_attempt_is_a_clear_error(no_agent, monkeypatch):
    monkeypatch.setenv("SPOTRUN_ATTEMPT", "two")
    with pytest.raises(ValueError, match="SPOTRUN_ATTEMPT must be an integer"):
        spotrun.attempt()


def test_save_load_latest_keeps_newest(no_agent):
    for step in (5, 100, 20, 7):  # out of order on purpose: newest means highest step
        spotrun.save({"step": step, "weights": [step] * 3}, step=step, keep=2)
    assert [step for step, _ in spotrun.list_checkpoints()] == [20, 100]
    state, step = spotrun.load_latest()
    assert step == 100
    assert state == {"step": 100, "weights": [100, 100, 100]}


def test_names_sort_by_step_beyond_one_digit(no_agent):
    for step in (9, 10, 1_000_000):
        spotrun.save(step, step=step, keep=5)
    names = sorted(p.name for p in spotrun.checkpoint_dir().iterdir() if p.is_file())
    assert names == ["ckpt-000000000009.pkl", "ckpt-000000000010.pkl", "ckpt-000001000000.pkl"]
    assert spotrun.load_latest() == (1_000_000, 1_000_000)


def test_prefixes_are_separate_series(no_agent):
    spotrun.save("a", step=3, prefix="model")
    spotrun.save("b", step=9, prefix="ema")
    assert spotrun.load_latest(prefix="model") == ("a", 3)
    assert spotrun.load_latest(prefix="ema") == ("b", 9)


def test_temp_and_foreign_files_are_ignored(no_agent):
    root = spotrun.checkpoint_dir()
    spotrun.save("good", step=1)
    (root / f".ckpt-000000000099.pkl{TMP_MARKER}abcd").write_bytes(b"half written")
    (root / "ckpt-latest.pkl").write_bytes(b"not ours")
    (root / "notes.txt").write_text("hello")
    assert spotrun.load_latest() == ("good", 1)
    prune(root, keep=1)
    assert (root / "notes.txt").exists()


def test_invalid_arguments(no_agent):
    with pytest.raises(ValueError, match="step must be >= 0"):
        spotrun.save("x", step=-1)
    with pytest.raises(ValueError, match="keep must be >= 1"):
        spotrun.save("x", step=1, keep=0)


def test_atomic_path_publishes_only_on_success(tmp_path):
    target = tmp_path / "model.ckpt"
    with atomic_path(target) as tmp:
        assert TMP_MARKER in tmp.name
        tmp.write_bytes(b"v1")
        assert not target.exists()
    assert target.read_bytes() == b"v1"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"v2 half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]


def test_killed_writer_never_leaves_a_torn_checkpoint(tmp_path):
    """A process killed mid-save leaves the previous checkpoint as the newest complete one."""
    script = (
        "import os, signal, spotrun\n"
        "class DiesWhilePickled:\n"
        "    def __reduce__(self):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "spotrun.save(b'complete', step=1)\n"
        "spotrun.save({'big': b'x' * 1_000_000, 'bomb': DiesWhilePickled()}, step=2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=60)
    assert proc.returncode == -9
    root = tmp_path / "checkpoints"
    assert spotrun.load_latest(root) == (b"complete", 1)
    assert any(TMP_MARKER in p.name for p in root.iterdir())  # the torn temp is left, and skipped
