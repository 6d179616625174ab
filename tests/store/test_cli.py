"""`spotrun ckpt` in a child process, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from spotrun.store.format import pack_key

from .helpers import BUCKET, s3_url, tree, write


def run(cmd: list[str], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, "ckpt", *args], capture_output=True, text=True, timeout=120, env=env)


def ok_json(cmd: list[str], *args: str) -> object:
    result = run(cmd, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_snapshot_ls_show_restore_verify_du_pin_gc(spotrun_cmd: list[str], tmp_path: Path) -> None:
    store = str(tmp_path / "store")  # a plain path works as file://
    src = tmp_path / "src"
    write(src / "model.pt", os.urandom(300_000))
    write(src / "cfg/run.yaml", "lr: 0.1\n")
    first = ok_json(spotrun_cmd, "snapshot", store, str(src), "--job", "train-7", "--attempt", "1")
    assert first["published"] and first["id"] == "a1-s1"
    write(src / "cfg/run.yaml", "lr: 0.01\n")
    assert ok_json(spotrun_cmd, "snapshot", store, str(src), "--job", "train-7")["id"] == "a1-s2"

    assert ok_json(spotrun_cmd, "ls", store) == [
        {
            "job": "train-7",
            "snapshots": 2,
            "latest": "a1-s2",
            "updated": ok_json(spotrun_cmd, "ls", store)[0]["updated"],
        }
    ]
    snaps = ok_json(spotrun_cmd, "ls", store, "--job", "train-7")
    assert [(s["id"], s["files"], s["pinned"]) for s in snaps] == [("a1-s1", 2, False), ("a1-s2", 2, False)]
    shown = ok_json(spotrun_cmd, "show", store, "--job", "train-7", "--snapshot", "1.1")
    assert sorted(f["path"] for f in shown["files"]) == ["cfg/run.yaml", "model.pt"]

    restored = ok_json(spotrun_cmd, "restore", store, str(tmp_path / "out"), "--job", "train-7")
    assert restored["snapshot"] == "a1-s2" and tree(tmp_path / "out") == tree(src)
    again = run(spotrun_cmd, "restore", store, str(tmp_path / "out"), "--job", "train-7")
    assert again.returncode == 2 and "--force" in again.stderr

    assert ok_json(spotrun_cmd, "verify", store)["ok"] is True
    assert ok_json(spotrun_cmd, "pin", store, "-j", "train-7", "-s", "a1-s1")["pinned"] is True
    assert (
        ok_json(spotrun_cmd, "gc", store, "--keep", "1", "--grace", "0s")["pruned"] == []
    )  # a1-s1 is pinned
    usage = ok_json(spotrun_cmd, "du", store)
    assert usage["jobs"][0]["snapshots"] == 2 and usage["unreferenced_bytes"] == 0
    human = run(spotrun_cmd, "ls", store, "--job", "train-7")
    assert human.returncode == 0 and "a1-s2" in human.stdout


def test_verify_names_the_corrupt_file_and_exits_1(spotrun_cmd: list[str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    write(tmp_path / "src" / "weights.pt", os.urandom(100_000))
    write(tmp_path / "src" / "ok.txt", "fine")
    info = ok_json(spotrun_cmd, "snapshot", str(store), str(tmp_path / "src"), "--job", "j")
    shown = ok_json(spotrun_cmd, "show", str(store), "--job", "j")
    pack = next(f for f in shown["files"] if f["path"] == "weights.pt")["packs"][0][0]
    chunk = store / pack_key(pack)
    data = bytearray(chunk.read_bytes())
    data[5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    result = run(spotrun_cmd, "verify", str(store))
    assert result.returncode == 1 and "weights.pt" in result.stdout and "ok.txt" not in result.stdout
    refused = run(spotrun_cmd, "restore", str(store), str(tmp_path / "out"), "--job", "j")
    assert refused.returncode == 2 and "corrupt chunk" in refused.stderr and "Traceback" not in refused.stderr
    assert info["id"] == "a1-s1"


def test_unreachable_and_missing_stores_are_clear_errors(
    spotrun_cmd: list[str], tmp_path: Path, s3_env: dict[str, str]
) -> None:
    from tests.conftest import free_port

    env = dict(os.environ, SPOTRUN_STORE_RETRY_TIMEOUT="2s")
    url = s3_url(f"http://127.0.0.1:{free_port()}")  # nobody listens there
    result = run(spotrun_cmd, "ls", url, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert BUCKET in result.stderr and "check the bucket name" in result.stderr
    missing = run(spotrun_cmd, "ls", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = run(spotrun_cmd, "show", str(tmp_path), "--job", "x", "--snapshot", "latest-ish")
    assert bad.returncode == 2 and ("not a snapshot id" in bad.stderr or "no snapshot" in bad.stderr)


def test_an_invalid_latest_manifest_is_shown_and_skipped_by_ckpt_and_exec(spotrun_cmd: list[str], tmp_path: Path) -> None:
    """`chunk_size: 0` once crashed restore (ZeroDivisionError) and made `exec` exit 70."""
    store = tmp_path / "store"
    write(tmp_path / "src" / "step.txt", "41")
    ok_json(spotrun_cmd, "snapshot", str(store), str(tmp_path / "src"), "--job", "j")
    good = store / "jobs/j/snapshots/a000001-s00000001.json"
    bad = json.loads(good.read_text()) | {"sequence": 2, "chunk_size": 0}
    good.with_name("a000001-s00000002.json").write_text(json.dumps(bad))

    rows = ok_json(spotrun_cmd, "ls", str(store), "--job", "j")
    assert [(r["id"], r["files"]) for r in rows] == [("a1-s1", 1), ("a1-s2", None)]
    assert rows[0]["invalid"] is None and "chunk_size = 0" in rows[1]["invalid"]
    human = run(spotrun_cmd, "ls", str(store), "--job", "j")
    assert human.returncode == 0 and "invalid" in human.stdout and "Traceback" not in human.stderr
    refused = run(spotrun_cmd, "restore", str(store), str(tmp_path / "out"), "--job", "j")
    assert refused.returncode == 2 and "chunk_size = 0" in refused.stderr and "Traceback" not in refused.stderr
    restored = ok_json(spotrun_cmd, "restore", str(store), str(tmp_path / "out"), "--job", "j", "--fallback")
    assert restored["snapshot"] == "a1-s1" and restored["skipped"][0]["snapshot"] == "a1-s2"

    ckpt = tmp_path / "ckpt"
    agent = subprocess.run(
        [*spotrun_cmd, "exec", "--provider", "none", "--notice-file", str(tmp_path / "n.json"),
         "--checkpoint-dir", str(ckpt), "--store", str(store), "--job-id", "j", "--attempt", "2",
         "--", "bash", "-c", f'test "$(cat {ckpt}/step.txt)" = 41'],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert agent.returncode == 0, agent.stderr
    assert "snapshot a1-s2 of job j refused" in agent.stderr and "restored snapshot a1-s1" in agent.stderr
