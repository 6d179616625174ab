"""Credentials in a store URL never reach a message, and a file:// store is private."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from spotrun.redact import redact_text, redact_url
from spotrun.store import Store, StoreUnavailable
from tests.conftest import free_port

from .helpers import write

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_redact_url_hides_user_info_and_every_query_value_but_where_the_store_is() -> None:
    url = f"s3://AKIAEXAMPLE:{SECRET}@bucket/ckpt?endpoint=http://127.0.0.1:9000&aws_secret_access_key={SECRET}&region=eu-west-1&sig=abc%2Fdef"
    shown = redact_url(url)
    assert shown == "s3://***@bucket/ckpt?endpoint=http://127.0.0.1:9000&aws_secret_access_key=***&region=eu-west-1&sig=***"
    assert redact_url("file:///data/store") == "file:///data/store"
    text = f"cannot open {url}: failed; token {SECRET} in the reply"
    assert SECRET not in redact_text(text, [SECRET]) and "AKIAEXAMPLE" not in redact_text(text)


async def test_store_errors_name_the_store_without_its_credentials(s3_env: dict[str, str]) -> None:
    url = f"s3://bucket/p?endpoint=http://127.0.0.1:{free_port()}&aws_secret_access_key={SECRET}"
    store = Store.open(url, retry_timeout_s=1)
    assert SECRET not in store.url and "aws_secret_access_key=***" in store.url
    with pytest.raises(StoreUnavailable) as err:
        await store.jobs()
    message = str(err.value)
    assert SECRET not in message and "aws_secret_access_key=***" in message
    assert "Debug source" not in message and "\n" not in message


def test_agent_log_and_ckpt_output_never_show_the_secret(spotrun_cmd: list[str], tmp_path: Path) -> None:
    """What `spotrun logs` shows is the agent's own log: the store URL in it is redacted."""
    url = f"s3://bucket/p?endpoint=http://127.0.0.1:{free_port()}&aws_secret_access_key={SECRET}"
    env = dict(os.environ, SPOTRUN_STORE_RETRY_TIMEOUT="1s", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y")
    agent = subprocess.run(
        [*spotrun_cmd, "exec", "--provider", "none", "--notice-file", str(tmp_path / "n.json"),
         "--checkpoint-dir", str(tmp_path / "ckpt"), "--store", url, "--", "true"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert agent.returncode == 70 and "aws_secret_access_key=***" in agent.stderr, agent.stderr
    ls = subprocess.run([*spotrun_cmd, "ckpt", "ls", url], capture_output=True, text=True, env=env, timeout=120)
    assert ls.returncode == 2 and "***" in ls.stderr
    for output in (agent.stdout, agent.stderr, ls.stdout, ls.stderr):
        assert SECRET not in output and "Debug source" not in output


async def test_a_file_store_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = Store.open((tmp_path / "home" / "store").as_uri(), create=True)
        write(tmp_path / "src" / "model.pt", os.urandom(1 << 20))
        await store.snapshot("job-1", 1, tmp_path / "src")
        await store.backend.put("jobs/job-1/outputs/attempt-1/log.txt", tmp_path / "src" / "model.pt", create=True)
    finally:
        os.umask(old)
    modes = {
        p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [tmp_path / "home", *(tmp_path / "home").rglob("*")]
    }
    assert len(modes) > 8
    loose = {p: oct(m) for p, m in modes.items() if m != (0o700 if (tmp_path / p).is_dir() else 0o600)}
    assert loose == {}
