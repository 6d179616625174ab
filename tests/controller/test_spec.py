"""Job specs: defaults that make a one-liner a job, and errors that point at the YAML line."""

from __future__ import annotations

from pathlib import Path

import pytest

from spotrun.controller.api import prepare_spec
from spotrun.controller.spec import JobSpec, SpecError, load_spec, load_spec_text


def test_one_line_run_is_a_complete_job() -> None:
    spec = load_spec_text("run: python train.py\n")
    assert spec.run == "python train.py"
    assert spec.resources.provider == "local" and spec.resources.spot is True
    assert spec.display_name() == "python"
    assert spec.on_success == "keep" and spec.checkpoint is None


def test_full_spec_parses_durations_and_sections() -> None:
    spec = load_spec_text(
        """
name: bert
run: python train.py --epochs 3
setup: pip install -r requirements.txt
env: {LR: 0.1, DEBUG: null}
resources: {instance_type: p3.2xlarge, zones: [a, b], spot: auto}
checkpoint: {dir: ckpt, store: "file:///tmp/s", sync_interval: 1m30s, keep: 3}
recovery: {max_reclaims: 5, max_errors: 2, backoff: {base: 250ms, max: 2m}, deadline: 1h}
notice: {signal: INT, lead_time: 10s}
max_price: 1.5
on_success: delete
"""
    )
    assert spec.env == {"LR": "0.1", "DEBUG": ""}
    assert spec.resources.spot == "auto" and spec.resources.zones == ["a", "b"]
    assert spec.checkpoint.sync_interval == 90.0
    assert spec.recovery.backoff.base == 0.25 and spec.recovery.backoff.max == 120.0
    assert spec.recovery.deadline == 3600.0
    assert spec.notice.signal == "SIGINT" and spec.notice.lead_time == 10.0
    assert spec.agent_args() == (
        "--signal", "SIGINT", "--checkpoint-dir", "ckpt", "--sync-interval", "90.0s", "--keep", "3",
    )
    assert spec.agent_env("file:///default") == {"SPOTRUN_STORE": "file:///tmp/s"}
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_errors_name_field_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: t\n"
        "run: python train.py\n"
        "resources:\n"
        "  provider: local\n"
        "  spot: maybe\n"
        "recovery:\n"
        "  max_reclaims: -1\n"
        "  backof: {base: 1s}\n"
        "  deadline: two weeks\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    problems = info.value.problems
    assert problems[0] == f"{path}:5:3: resources.spot: must be true, false or auto"
    assert problems[1].startswith(f"{path}:7:3: recovery.max_reclaims: ")
    assert problems[2] == f"{path}:8:3: recovery.backof: unknown field; did you mean 'backoff'?"
    assert problems[3].startswith(f"{path}:9:3: recovery.deadline: not a duration: 'two weeks'")
    assert len(problems) == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run: [a\n", "job.yaml:2:1: invalid YAML: expected ',' or ']'"),
        ("run: x\n  bad: : y\n", "job.yaml:2:"),
        ("", "job.yaml: the file is empty"),
        ("- run: x\n", "job.yaml:1:1: a job spec is a mapping"),
        ("name: x\n", "job.yaml:1:1: run: required field is missing"),
        ("run: ''\n", "job.yaml:1:1: run: String should have at least 1 character"),
        ("run: x\nnotice:\n  signal: SIGFOO\n", "job.yaml:3:3: notice.signal: unknown signal 'SIGFOO'"),
        ("run: x\ncheckpoint:\n  keep: 0\n", "job.yaml:3:3: checkpoint.keep: Input should be greater than or equal to 1"),
        ("run: x\non_success: maybe\n", "job.yaml:2:1: on_success: Input should be 'keep' or 'delete'"),
        ("run: x\nrecovery:\n  deadline: yes\n", "job.yaml:3:3: recovery.deadline: must be a duration"),
    ],
)
def test_bad_specs_say_where(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "job.yaml")
    assert str(info.value).startswith(expected), str(info.value)


def test_dict_specs_are_checked_too() -> None:
    with pytest.raises(SpecError, match=r"resources\.spot: must be true, false or auto"):
        load_spec({"run": "x", "resources": {"spot": "sometimes"}})
    with pytest.raises(SpecError, match="no such file"):
        load_spec("/nonexistent/job.yaml")


def test_launch_time_checks(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "job.yaml").write_text("run: x\nworkdir: code\n")
    assert prepare_spec(tmp_path / "job.yaml").workdir == str(tmp_path / "code")
    with pytest.raises(SpecError) as info:
        prepare_spec({"run": "x", "workdir": str(tmp_path / "missing"), "resources": {"provider": "mars"},
                      "checkpoint": {"store": "ftp://host/x"}})
    text = str(info.value)
    assert "resources.provider: unknown provider 'mars'" in text
    assert "is not a directory" in text
    assert "checkpoint.store: 'ftp://host/x' is not a store URL" in text
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpecError, match="checkpoint.store: cannot write under"):
        prepare_spec({"run": "x", "checkpoint": {"store": f"file://{blocker}/store"}})
