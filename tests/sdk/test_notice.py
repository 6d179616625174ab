"""The notice SDK: in a real command under a real `spotrun exec`, and without the agent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import spotrun
from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.notices.base import NoticeKind

# A training loop that uses the SDK, then asks for its own reclaim by creating the watched file.
JOB = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path
    import spotrun

    out, trigger = Path(sys.argv[1]), Path(sys.argv[2])
    calls = []
    fired = threading.Event()

    def callback(notice):
        calls.append(notice.to_dict())
        fired.set()

    before = {"notice": spotrun.notice(), "should_stop": spotrun.should_stop()}
    spotrun.on_notice(callback)
    trigger.write_text(sys.argv[3])
    steps = 0
    while not spotrun.should_stop():
        steps += 1
        time.sleep(0.01)
    fired.wait(30)
    time.sleep(0.3)  # a second call, if the SDK made one, would land now
    (out / "result.json").write_text(json.dumps({
        "before": {"notice": before["notice"], "should_stop": before["should_stop"]},
        "calls": calls,
        "notice": spotrun.notice().to_dict(),
    }, default=str))
    """
)


def run_job(tmp_path: Path, spotrun_cmd: list[str], content: dict, *agent_args: str) -> tuple[int, dict]:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    trigger = tmp_path / "reclaim"
    proc = subprocess.run(
        [*spotrun_cmd, "exec", "--provider", "file", "--watch-file", str(trigger),
         "--notice-file", str(tmp_path / "notice.json"), *agent_args,
         "--", sys.executable, str(script), str(tmp_path), str(trigger), json.dumps(content)],
        capture_output=True, text=True, timeout=60,
    )
    result = tmp_path / "result.json"
    assert result.exists(), proc.stderr
    return proc.returncode, json.loads(result.read_text())


def test_a_reclaim_reaches_every_sdk_function_once(tmp_path, spotrun_cmd):
    code, result = run_job(tmp_path, spotrun_cmd, {"action": "stop", "deadline": "2031-01-01T00:00:00Z"})
    assert code == EXIT_RECLAIMED
    assert result["before"] == {"notice": None, "should_stop": False}
    assert len(result["calls"]) == 1
    assert result["calls"][0]["kind"] == "reclaim"
    assert result["calls"][0]["action"] == "stop"
    assert result["notice"]["deadline"].startswith("2031-01-01T00:00:00")


def test_the_agents_signal_fires_on_notice_even_for_a_rebalance(tmp_path, spotrun_cmd):
    # The file thread fires only on reclaims, so a rebalance callback proves the signal path.
    code, result = run_job(tmp_path, spotrun_cmd, {"kind": "rebalance"}, "--signal", "USR1", "--signal-rebalance")
    assert code == EXIT_RECLAIMED
    assert [c["kind"] for c in result["calls"]] == ["rebalance"]


@pytest.fixture
def notice_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "notice.json"
    monkeypatch.setenv("SPOTRUN_NOTICE_FILE", str(path))
    return path


def test_without_the_agent_nothing_happens(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SPOTRUN_NOTICE_FILE", raising=False)
    calls: list[object] = []
    spotrun.on_notice(calls.append)
    assert spotrun.notice() is None
    assert spotrun.should_stop() is False
    assert calls == []


def test_missing_partial_and_advisory_notice_files(notice_file: Path):
    assert spotrun.notice() is None and not spotrun.should_stop()
    notice_file.write_text('{"provider": "aws", "kind": "recl')
    assert spotrun.notice() is None and not spotrun.should_stop()
    notice_file.write_text(json.dumps({"provider": "aws", "kind": "rebalance", "action": "rebalance",
                                       "deadline": None, "received_at": "2026-01-01T00:00:00+00:00"}))
    assert spotrun.notice().kind is NoticeKind.REBALANCE
    assert not spotrun.should_stop()  # advisory: keep training
    notice_file.write_text(json.dumps({"provider": "aws", "kind": "reclaim", "action": "terminate",
                                       "deadline": "2026-01-01T00:02:00+00:00",
                                       "received_at": "2026-01-01T00:00:00+00:00"}))
    assert spotrun.should_stop()
    assert spotrun.notice().seconds_left(spotrun.notice().received_at) == 120
