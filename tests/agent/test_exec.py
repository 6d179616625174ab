"""`spotrun exec` end to end: a real agent process, real commands, real signals."""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from spotrun.agent.procgroup import group_alive
from spotrun.agent.supervisor import EXIT_RECLAIMED

from .helpers import child_cmd, wait_for


def file_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--provider", "file", "--watch-file", str(tmp_path / "reclaim"),
            "--notice-file", str(tmp_path / "notice.json"), *extra]


def publish(tmp_path: Path, content: dict | str = "") -> None:
    """What a scheduler does to trigger a notice: the watched file appears (written whole)."""
    tmp = tmp_path / "reclaim.tmp"
    tmp.write_text(content if isinstance(content, str) else json.dumps(content))
    tmp.rename(tmp_path / "reclaim")


def in_seconds(s: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=s)).isoformat()


def test_the_commands_own_exit_status_and_environment(agent, out, tmp_path):
    a = agent(["--provider", "none", "--job-id", "job-42", "--attempt", "3",
               "--notice-file", str(tmp_path / "n.json")], child_cmd(out, "env"))
    assert a.wait() == 3
    env = json.loads((out / "env.json").read_text())
    assert env["SPOTRUN_JOB_ID"] == "job-42"
    assert env["SPOTRUN_ATTEMPT"] == "3"
    assert env["SPOTRUN_NOTICE_FILE"] == str(tmp_path / "n.json")
    assert env["SPOTRUN_SIGNAL"] == "SIGTERM"


def test_a_missing_command_exits_127_with_a_clear_message(agent, tmp_path):
    a = agent(["--provider", "none"], ["no-such-command-spotrun"])
    assert a.wait() == 127
    assert "command not found: no-such-command-spotrun" in a.log
    assert "Traceback" not in a.log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provider", "none", "--signal", "NOPE"], "not a signal"),
        (["--provider", "file"], "needs a file to watch"),
        (["--provider", "nimbus"], "unknown notice provider"),
        (["--provider", "none", "--notice-file", "/proc/no-such/notice.json"], "cannot use the notice file"),
    ],
)
def test_bad_options_fail_before_anything_runs(agent, out, args, message):
    a = agent(args, child_cmd(out, "env"))
    assert a.wait() == 2
    assert message in a.log
    assert "Traceback" not in a.log
    assert not (out / "env.json").exists()


def test_reclaim_signals_the_whole_group_and_exits_75(agent, out, tmp_path):
    grandchild = out / "grandchild"
    shell = f"{sys.executable} {child_cmd(grandchild, 'handle')[1]} {grandchild} handle & wait"
    a = agent(file_args(tmp_path), ["bash", "-c", shell])
    wait_for(lambda: (grandchild / "ready").exists(), "the grandchild to start")
    deadline = in_seconds(120)
    publish(tmp_path, {"action": "terminate", "deadline": deadline})
    assert a.wait() == EXIT_RECLAIMED
    seen = json.loads((grandchild / "got-SIGTERM").read_text())  # it read the notice on the signal
    assert seen["provider"] == "file"
    assert seen["kind"] == "reclaim"
    assert seen["action"] == "terminate"
    assert datetime.fromisoformat(seen["deadline"]) == datetime.fromisoformat(deadline)
    assert seen["received_at"]
    env_lines = (tmp_path / "notice.json.env").read_text()
    assert "SPOTRUN_NOTICE_KIND=reclaim" in env_lines
    assert "SPOTRUN_DEADLINE=" in env_lines and deadline[:19] in env_lines


def test_a_program_under_a_dying_shell_keeps_its_time_to_save(agent, out, tmp_path):
    # bash dies on SIGTERM at once; the program it started gets its second to finish saving.
    shell = f"{sys.executable} {child_cmd(out, 'slow')[1]} {out} slow; echo unreachable"
    a = agent(file_args(tmp_path), ["bash", "-c", shell])
    wait_for(lambda: (out / "ready").exists(), "the program to start")
    publish(tmp_path, {"deadline": in_seconds(60)})
    assert a.wait() == EXIT_RECLAIMED
    assert (out / "clean-exit").exists(), a.log


def test_sigint_becomes_a_keyboard_interrupt(agent, out, tmp_path):
    a = agent(file_args(tmp_path, "--signal", "INT"), child_cmd(out, "default"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    publish(tmp_path)
    assert a.wait() == EXIT_RECLAIMED
    assert json.loads((out / "keyboard-interrupt").read_text())["deadline"] is None


def test_a_command_that_ignores_the_signal_is_killed_after_the_grace(agent, out, tmp_path):
    a = agent(file_args(tmp_path, "--grace", "1s"), child_cmd(out, "ignore"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    publish(tmp_path)
    assert a.wait() == EXIT_RECLAIMED
    assert "killing it (SIGKILL)" in a.log


def test_a_past_deadline_does_not_kill_the_command_early(agent, out, tmp_path):
    a = agent(file_args(tmp_path, "--kill-margin", "5s", "--grace", "20s"), child_cmd(out, "slow"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    publish(tmp_path, {"deadline": "2020-01-01T00:00:00Z"})  # stale, as AWS may leave it
    assert a.wait() == EXIT_RECLAIMED
    assert (out / "clean-exit").exists(), a.log  # it had its second to finish
    assert "passed already" in a.log


def test_signals_to_the_agent_are_passed_on(agent, out, tmp_path):
    a = agent(["--provider", "none", "--notice-file", str(tmp_path / "n.json")], child_cmd(out, "handle"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    for sig in (signal.SIGUSR1, signal.SIGHUP):
        a.signal(sig)
        wait_for(lambda: (out / f"got-{sig.name}").exists(), f"{sig.name} to reach the command")
    a.signal(signal.SIGTERM)
    assert a.wait() == 0  # the command handled TERM and exited 0 by itself: no notice, its own status
    assert (out / "got-SIGTERM").read_text() == ""  # no notice file was written


def test_ctrl_c_on_the_agent_is_a_keyboard_interrupt_in_the_command(agent, out, tmp_path):
    a = agent(["--provider", "none", "--notice-file", str(tmp_path / "n.json")], child_cmd(out, "default"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    a.signal(signal.SIGINT)
    assert a.wait() == 0  # the command caught KeyboardInterrupt and exited 0
    assert (out / "keyboard-interrupt").exists()


def test_a_signal_that_kills_the_command_gives_128_plus_n(agent, out, tmp_path):
    a = agent(["--provider", "none", "--notice-file", str(tmp_path / "n.json")], child_cmd(out, "default"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    a.signal(signal.SIGTERM)
    assert a.wait() == 128 + signal.SIGTERM


def test_kubernetes_sigterm_is_the_notice(agent, out, tmp_path):
    a = agent(["--provider", "kubernetes", "--k8s-grace", "20s",
               "--notice-file", str(tmp_path / "n.json")], child_cmd(out, "handle"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    sent = datetime.now(timezone.utc)
    a.signal(signal.SIGTERM)
    assert a.wait() == EXIT_RECLAIMED
    seen = json.loads((out / "got-SIGTERM").read_text())
    assert seen["provider"] == "kubernetes"
    left = (datetime.fromisoformat(seen["deadline"]) - sent).total_seconds()
    assert 15 < left < 25


def test_on_notice_command_runs_with_the_deadline(agent, out, tmp_path):
    marker = tmp_path / "on-notice.txt"
    a = agent(file_args(tmp_path, "--on-notice", f'echo "$SPOTRUN_NOTICE_KIND $SPOTRUN_DEADLINE" > {marker}'),
              child_cmd(out, "handle"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    deadline = in_seconds(60)
    publish(tmp_path, {"deadline": deadline})
    assert a.wait() == EXIT_RECLAIMED
    text = wait_for(lambda: marker.exists() and marker.read_text().strip(), "the --on-notice command")
    kind, when = str(text).split()
    assert kind == "reclaim"
    assert datetime.fromisoformat(when) == datetime.fromisoformat(deadline)


def test_rebalance_is_published_but_not_signalled(agent, out, tmp_path):
    a = agent(file_args(tmp_path), child_cmd(out, "handle"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    publish(tmp_path, {"kind": "rebalance", "action": "rebalance"})
    notice_file = tmp_path / "notice.json"
    wait_for(lambda: notice_file.exists(), "the notice file")
    assert json.loads(notice_file.read_text())["kind"] == "rebalance"
    assert "not signalled" in wait_for(lambda: "not signalled" in a.log and a.log, "the log line")
    a.signal(signal.SIGUSR1)  # the command is alive and well: it still answers
    wait_for(lambda: (out / "got-SIGUSR1").exists(), "USR1 to reach the command")
    assert not (out / "got-SIGTERM").exists()
    a.signal(signal.SIGTERM)  # not stopped for the notice: the agent exits with the command's own status
    assert a.wait() == 75  # (it had seen a notice file, so it said "not done")


def test_signal_rebalance_stops_the_command(agent, out, tmp_path):
    a = agent(file_args(tmp_path, "--signal-rebalance"), child_cmd(out, "handle"))
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    publish(tmp_path, {"kind": "rebalance"})
    assert a.wait() == EXIT_RECLAIMED
    assert json.loads((out / "got-SIGTERM").read_text())["kind"] == "rebalance"


def test_a_killed_agent_takes_its_whole_command_with_it(agent, out, tmp_path):
    """SIGKILL leaves the agent no time to act: its watchdog ends the command's process group."""
    script = (f'sleep 600 & echo $! > {out}/background; '
              f'echo $$ > {out}/.ready.tmp && mv {out}/.ready.tmp {out}/ready; wait')  # fmt: skip
    a = agent(["--provider", "none", "--notice-file", str(tmp_path / "n.json")], ["bash", "-c", script])
    group = int(wait_for(lambda: (out / "ready").exists() and (out / "ready").read_text(), "the command"))
    background = (out / "background").read_text().strip()
    assert int(Path(f"/proc/{background}/stat").read_text().rsplit(")", 1)[1].split()[2]) == group
    assert group_alive(group)
    a.signal(signal.SIGKILL)
    assert a.wait() == -signal.SIGKILL
    wait_for(lambda: not group_alive(group), "the command's group, background job included, to be gone")


def test_an_agent_that_finishes_leaves_no_watchdog_behind(agent, out, tmp_path):
    a = agent(["--provider", "none", "--notice-file", str(tmp_path / "n.json")],
              ["bash", "-c", f"echo $$ > {out}/pid"])  # fmt: skip
    assert a.wait() == 0
    assert not processes_with(f"\0{(out / 'pid').read_text().strip()}\0spotrun-watchdog\0")


def processes_with(needle: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_command_that_finishes_inside_the_notice_window_exits_0(agent, out, tmp_path):
    # Done is done: reporting it reclaimed would run its work, and its side effects, again.
    notice = tmp_path / "notice.json"
    script = f"trap '' TERM; touch {out}/ready; while [ ! -e {notice} ]; do sleep 0.05; done; exit 0"
    a = agent(file_args(tmp_path, "--grace", "20s"), ["bash", "-c", script])
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    publish(tmp_path, {"deadline": in_seconds(60)})
    assert a.wait() == 0, a.log


def test_a_command_that_catches_the_signal_and_exits_0_is_reclaimed(agent, out, tmp_path):
    # Lightning's way: the handler stops the work early in good order and the process exits 0.
    # Taken as done, the job would be recorded SUCCEEDED half-way; it must resume instead.
    script = (f"trap 'exit 0' TERM; touch {out}/ready; "
              "while true; do sleep 0.05; done")  # fmt: skip
    a = agent(file_args(tmp_path, "--grace", "20s"), ["bash", "-c", script])
    wait_for(lambda: (out / "ready").exists(), "the command to start")
    publish(tmp_path, {"deadline": in_seconds(60)})
    assert a.wait() == 75, a.log
