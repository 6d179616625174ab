"""What `spotrun exec` gives a command beyond the signal: a job id the next machine derives the
same way, the endpoint it watches, a notice by file alone (`--signal none`), and Valohai's
`_restart` directory with modification times kept."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.emulators.aws import AwsEmulator
from spotrun.emulators.base import EmulatorThread
from spotrun.emulators.gcp import GcpEmulator

from .helpers import wait_for


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


ENV = """
    import json, os, sys
    keys = ("SPOTRUN_JOB_ID", "SPOTRUN_METADATA_URL", "AWS_EC2_METADATA_SERVICE_ENDPOINT", "GCE_METADATA_HOST")
    json.dump({k: os.environ.get(k) for k in keys}, open(sys.argv[1], "w"))
"""


def test_signal_none_only_writes_the_notice_file(agent, tmp_path):
    command = script(tmp_path, "watcher", """
        import os, pathlib, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: pathlib.Path(sys.argv[1], "signalled").touch())
        pathlib.Path(sys.argv[1], "ready").touch()
        while not os.path.exists(os.environ["SPOTRUN_NOTICE_FILE"]):
            time.sleep(0.02)
        pathlib.Path(sys.argv[1], "saw-notice").touch()
    """)
    a = agent(["--provider", "file", "--watch-file", str(tmp_path / "reclaim"), "--signal", "none",
               "--notice-file", str(tmp_path / "notice.json")], [*command, str(tmp_path)])
    wait_for(lambda: (tmp_path / "ready").exists(), "the command to start")
    (tmp_path / "reclaim").write_text("")
    assert a.wait() == EXIT_RECLAIMED, a.log
    assert (tmp_path / "saw-notice").exists() and not (tmp_path / "signalled").exists()
    assert "not signalling (--signal none)" in a.log


def test_the_watched_endpoint_is_exported_in_each_clouds_variable(agent, tmp_path):
    command = script(tmp_path, "env", ENV)
    for provider, emulator in (("aws", AwsEmulator()), ("gcp", GcpEmulator())):
        with EmulatorThread(emulator) as emu:
            seen = tmp_path / f"{provider}.json"
            a = agent(["--provider", provider, "--metadata-url", emu.url, "--notice-file", str(tmp_path / "n.json")],
                      [*command, str(seen)])
            assert a.wait() == 0, a.log
        env = json.loads(seen.read_text())
        assert env["SPOTRUN_METADATA_URL"] == emu.url.rstrip("/")
        if provider == "aws":  # botocore's variable: IMDS clients and a script's own poller hear the emulator
            assert env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == emu.url.rstrip("/") + "/"
        else:  # google-auth's: host and port, no scheme
            assert env["GCE_METADATA_HOST"] == emu.url.split("://")[1].rstrip("/")


def test_the_default_job_id_is_derived_so_the_next_machine_restores(agent, tmp_path, monkeypatch):
    """The README's walkthrough: delete the checkpoint directory, run the same command again."""
    monkeypatch.chdir(tmp_path)
    count = script(tmp_path, "count", """
        import json, os, pathlib
        path = pathlib.Path(os.environ["SPOTRUN_CHECKPOINT_DIR"], "count")
        n = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(n))
        print("job", os.environ["SPOTRUN_JOB_ID"], "count", n)
    """)
    store = (tmp_path / "store").as_uri()
    args = ["--provider", "none", "--checkpoint-dir", "ckpt", "--store", store, "--notice-file", str(tmp_path / "n.json")]
    first = agent(args, count)
    assert first.wait() == 0, first.log
    job = first.log.split("job id ", 1)[1].split()[0]
    assert (tmp_path / "ckpt" / "count").read_text() == "1"
    for name in os.listdir(tmp_path / "ckpt"):  # the machine's disk is gone
        os.remove(tmp_path / "ckpt" / name)
    second = agent(args, count)
    assert second.wait() == 0, second.log
    assert f"job id {job}" in second.log and "restored snapshot" in second.log
    assert (tmp_path / "ckpt" / "count").read_text() == "2"
    other = agent(args, [*count, "x"])
    assert other.wait() == 0
    assert f"job id {job}" not in other.log  # another command is another job


def test_restart_dir_holds_earlier_outputs_newest_attempt_last_with_their_times(agent, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write = script(tmp_path, "write", """
        import os, pathlib, sys
        out = pathlib.Path(os.environ["SPOTRUN_OUTPUTS_DIR"])
        args = sys.argv[1:]
        for name, content, when in zip(args[::3], args[1::3], args[2::3]):
            (out / name).write_text(content)
            os.utime(out / name, (int(when), int(when)))
    """)
    common = ["--provider", "none", "--job-id", "vh", "--outputs-dir", "outputs", "--store", (tmp_path / "store").as_uri(),
              "--notice-file", str(tmp_path / "n.json")]
    # names that sort against their age: only the kept times tell which is newest
    a = agent([*common, "--attempt", "1"], [*write, "z-old.pt", "1", "1000", "a-new.pt", "1", "3000", "same.txt", "1", "1000"])
    assert a.wait() == 0, a.log
    b = agent([*common, "--attempt", "2"], [*write, "same.txt", "2", "2000"])
    assert b.wait() == 0, b.log
    report = script(tmp_path, "report", """
        import json, os, pathlib, sys
        restart = pathlib.Path(os.environ["SPOTRUN_RESTART_DIR"])
        files = {p.name: [p.read_text(), int(p.stat().st_mtime)] for p in restart.iterdir()}
        json.dump(files, open(sys.argv[1], "w"))
    """)
    c = agent([*common, "--attempt", "3", "--restart-dir", "inputs/_restart"], [*report, str(tmp_path / "seen.json")])
    assert c.wait() == 0, c.log
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["a-new.pt"] == ["1", 3000] and seen["z-old.pt"] == ["1", 1000]
    assert seen["same.txt"] == ["2", 2000]  # the newest attempt's file wins the name
    assert max(seen, key=lambda n: seen[n][1]) == "a-new.pt"


def test_restart_dir_needs_an_outputs_dir(agent, tmp_path):
    a = agent(["--provider", "none", "--restart-dir", "r", "--notice-file", str(tmp_path / "n.json")], ["true"])
    assert a.wait() == 2
    assert "--restart-dir needs --outputs-dir" in a.log
