"""Fixtures for the SDK's tests: the examples double as the training scripts under test."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_result(name: str, argv: list[str], root: Path) -> dict:
    """Run an example to the end in this process, never interrupted, and return its result.

    No notice file in its environment, so it installs no signal handler in the test process.
    """
    output = root / "reference.json"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPOTRUN_CHECKPOINT_DIR", str(root / "reference-ckpt"))
        env.setenv("HF_HUB_OFFLINE", "1")
        env.delenv("SPOTRUN_NOTICE_FILE", raising=False)
        assert load_example(name).main([*argv, "--output", str(output)]) == 0
    return json.loads(output.read_text())


@pytest.fixture
def ckpt_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the agent would give a job, pointing at private directories."""
    env = {
        "SPOTRUN_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "SPOTRUN_NOTICE_FILE": str(tmp_path / "notice.json"),
        "SPOTRUN_ATTEMPT": "1",
        "SPOTRUN_HOME": str(tmp_path / "spotrun-home"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return {**os.environ, **env}
