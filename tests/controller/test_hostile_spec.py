"""Hostile and broken job files: each is refused with one line naming the field and the reason,
never a traceback, never a slow or memory-hungry parse."""

from __future__ import annotations

import codecs
import subprocess
from pathlib import Path

import pytest

from spotrun.controller.spec import SpecError, load_spec, load_spec_text

BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    + ["run: echo"]
)


def refused(text: str) -> str:
    with pytest.raises(SpecError) as err:
        load_spec_text(text, "job.yaml")
    assert len(err.value.problems) == 1, err.value.problems
    (line,) = err.value.problems
    assert "\n" not in line
    return line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (BILLION_LAUGHS, "aliases expand to more than"),
        ("run: echo\nx: " + "[" * 5000 + "]" * 5000, "nested more than 32 levels"),
        ("run: echo\nrecovery: {max_reclaims: " + "9" * 5000 + "}", "out of range"),
        ("run: '   '", "run: is blank"),
        ("run: echo\ncheckpoint: {sync_interval: 1e308}", "checkpoint.sync_interval: must be a finite duration"),
        ("run: echo\ncheckpoint: {sync_interval: .nan}", "checkpoint.sync_interval: must be a finite duration"),
        ("run: echo\ncheckpoint: {sync_interval: .inf}", "checkpoint.sync_interval: must be a finite duration"),
        ("run: echo\ncheckpoint: {sync_interval: 0}", "checkpoint.sync_interval: must be a positive duration"),
        ("run: echo\nmax_price: .inf", "max_price"),
        ("run: echo\nnotice: {signal: 9}", "notice.signal: SIGKILL cannot be caught"),
        ("run: echo\nnotice: {signal: SIGSTOP}", "notice.signal: SIGSTOP cannot be caught"),
        ("run: echo\nenv: {'A=B': x}", "env: 'A=B' is not an environment variable name"),
        ('run: echo\nenv: {"A\\0B": x}', "is not an environment variable name"),
        ('run: echo\nenv: {A: "x\\0y"}', "env.A: contains a NUL"),
        ("run: echo\nenv: {AWS_SECRET_ACCESS_KEY: abc}", "move it to `secrets:`"),
        ("run: echo\nsecrets: {HF_TOKEN: hf_abc}", "secrets.HF_TOKEN: give `{file: PATH}` or `{env: NAME}`"),
        ("run: echo\nsecrets: {HF_HOME: {env: HF_HOME}}\nenv: {HF_HOME: x}", "secrets.HF_HOME: also set in `env`"),
        ("run: echo\ncheckpoint: {dir: /home/me}", "checkpoint.dir: '/home/me' is outside the instance's working directory"),
        ("run: echo\ncheckpoint: {dir: ../../etc}", "checkpoint.dir: '../../etc' leaves the working directory"),
        ("run: echo\ncheckpoint: {dir: .}", "checkpoint.dir: must name a folder inside the working directory"),
        ("run: echo\noutputs: /tmp/out", "outputs.dir: '/tmp/out' is outside"),
        ("run: echo\noutputs: /mnt/nvme/out\nallow_paths: [/mnt/data]", "outputs.dir: '/mnt/nvme/out' is outside"),
        ("run: echo\nallow_paths: [/]", "allow_paths"),
        ("run: echo\na: &x [*x]", "an alias refers to the value that contains it"),
    ],
)
def test_each_bad_file_is_one_line_naming_the_field(text: str, says: str) -> None:
    assert says in refused(text)


def test_paths_inside_the_disk_or_an_allowed_root_are_accepted() -> None:
    spec = load_spec_text("run: echo\ncheckpoint: {dir: out/ckpt}\noutputs: results")
    assert spec.agent_args()[-2:] == ("--outputs-dir", "results")
    assert spec.agent_env("file:///s") == {"SPOTRUN_STORE": "file:///s"}
    spec = load_spec_text("run: echo\ncheckpoint: {dir: /mnt/nvme/ckpt}\nallow_paths: [/mnt/nvme]")
    assert spec.checkpoint.dir == "/mnt/nvme/ckpt"


def test_a_few_aliases_still_work() -> None:
    spec = load_spec_text("run: &r python train.py\nsetup: *r", "job.yaml")
    assert spec.setup == spec.run == "python train.py"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (codecs.BOM_UTF16_LE + "run: echo".encode("utf-16-le"), "UTF-16"),
        (b"run: caf\xe9", "not UTF-8 text (byte 0xe9 at offset 8)"),
        (b"run: echo\n#" + b"x" * 300_000, "larger than 256 KiB"),
    ],
)
def test_undecodable_or_huge_files_are_refused(tmp_path: Path, raw: bytes, says: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(raw)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert [says in line for line in err.value.problems] == [True]


def test_the_cli_prints_one_line_and_no_traceback(tmp_path: Path, spotrun_cmd: list[str], spotrun_home: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    proc = subprocess.run([*spotrun_cmd, "launch", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "aliases expand" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
