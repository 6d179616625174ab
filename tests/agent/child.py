"""A command for the agent to supervise; records what happens to it as files in OUT.

usage: child.py OUT MODE
  handle   record TERM/USR1/HUP (with the notice file's content); exit on TERM
  slow     on TERM: record, keep working 1 s, record `clean-exit`, exit
  ignore   ignore TERM, run until killed
  default  no handlers: TERM kills it; INT is recorded as a KeyboardInterrupt, then exit
Exiting, it says what a real job would (docs/sdk.md): 75, "not done, try again", after a
notice (the notice file exists); 0 when stopped without one.
  env      record the SPOTRUN_* environment and exit 3
Every mode but `env` writes `ready` once its handlers are in place.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

out = Path(sys.argv[1])
mode = sys.argv[2]
out.mkdir(parents=True, exist_ok=True)


def record(name: str, text: str = "") -> None:
    tmp = out / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / name)


def notice_text() -> str:
    try:
        return Path(os.environ["SPOTRUN_NOTICE_FILE"]).read_text()
    except OSError:
        return ""


def stop_status() -> int:
    return 75 if notice_text() else 0


def on_signal(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    record(f"got-{name}", notice_text())
    if signum == signal.SIGTERM and mode == "slow":
        time.sleep(1.0)
        record("clean-exit")
    if signum == signal.SIGTERM:
        sys.exit(stop_status())


if mode == "env":
    record("env.json", json.dumps({k: v for k, v in os.environ.items() if k.startswith("SPOTRUN_")}))
    sys.exit(3)
if mode in ("handle", "slow"):
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, on_signal)
elif mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
record("ready", str(os.getpid()))
try:
    while True:
        signal.pause()
except KeyboardInterrupt:
    record("keyboard-interrupt", notice_text())
    sys.exit(stop_status())
