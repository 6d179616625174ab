"""A launched job's declared outputs outlive its instance: `spotrun outputs` fetches them."""

from __future__ import annotations

import json
from pathlib import Path

from .test_cli import cli, daemon  # noqa: F401  (the daemon fixture)


def test_a_succeeded_jobs_outputs_are_fetched(tmp_path: Path, spotrun_cmd: list[str], daemon) -> None:  # noqa: F811
    job = tmp_path / "job.yaml"
    job.write_text("name: answer\nrun: mkdir -p out/sub && echo 42 > out/sub/answer.txt\noutputs:\n  dir: out\n")
    cli(spotrun_cmd, "launch", str(job), "--follow")
    (listed,) = json.loads(cli(spotrun_cmd, "jobs", "--json").stdout)
    assert listed["status"] == "SUCCEEDED"
    dest = tmp_path / "results"
    got = json.loads(cli(spotrun_cmd, "outputs", "answer", str(dest), "--json").stdout)
    assert (got["job"], got["files"]) == (listed["id"], ["sub/answer.txt"])
    assert (dest / "sub" / "answer.txt").read_text() == "42\n"

    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\nrun: 'true'\n")
    cli(spotrun_cmd, "launch", str(bare), "--follow")
    missing = cli(spotrun_cmd, "outputs", "bare", str(tmp_path / "none"), check=1)
    assert "has no outputs" in missing.stderr and "declare `outputs:`" in missing.stderr
