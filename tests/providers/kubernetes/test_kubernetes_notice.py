"""In a pod on EKS, IMDS is usually out of reach (IMDSv2's hop limit of 1: the token's answer
never arrives through the pod's extra hop), so the agent's probe finds no AWS notice endpoint and
kubelet's SIGTERM (graceful node shutdown, a Karpenter or termination-handler drain) is the notice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.emulators.aws import AwsEmulator
from spotrun.emulators.base import EmulatorThread

from tests.agent.helpers import child_cmd, wait_for


def test_on_eks_with_imds_hidden_sigterm_is_the_notice(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with EmulatorThread(AwsEmulator(imdsv2_required=True), host="127.0.0.1", port=0) as imds:
        imds.call(imds.emulator.set_token_mode, "hang")  # hop limit 1, seen from a container
        imds.call(imds.emulator.trigger, "reclaim", action="terminate", lead_s=120)  # never heard: out of reach
        env = {**os.environ, "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
        with open(tmp_path / "agent.log", "wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "spotrun", "exec", "--provider", "auto", "--metadata-url", imds.url,
                 "--k8s-grace", "20s", "--notice-file", str(tmp_path / "notice.json"), "--", *child_cmd(out, "handle")],
                env=env, stdout=subprocess.DEVNULL, stderr=log)
            try:
                wait_for(lambda: (out / "ready").exists(), "the command to start")
                assert not (out / "got-SIGTERM").exists()  # the AWS notice was never heard
                agent.send_signal(signal.SIGTERM)  # kubelet stopping the pod
                assert agent.wait(30) == EXIT_RECLAIMED
            finally:
                if agent.poll() is None:
                    agent.kill()
                    agent.wait()
    said = (tmp_path / "agent.log").read_text()
    assert "notice sources detected: kubernetes" in said and "aws" not in said.split("notice sources detected:")[1].splitlines()[0]
    assert json.loads((out / "got-SIGTERM").read_text())["provider"] == "kubernetes"
