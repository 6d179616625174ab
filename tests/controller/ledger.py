"""A job whose side effect is counted: one line `JOB ATTEMPT` appended to $LEDGER per completed run.

It ignores the notice's signal and keeps working, so it may finish inside a notice's window;
that exit 0 is a success, and a second run would add a second line. WORK_S: seconds of work.
With NOTICE_ENDS_WORK set, attempt 1 works until the notice file appears (up to 60 s).
Its parent (the agent) dying first means the run is lost, not completed: as with the agent's
parent-death signal, it then writes nothing.
"""

import os
import signal
import time
from pathlib import Path

signal.signal(signal.SIGTERM, signal.SIG_IGN)
parent = os.getppid()
attempt = os.environ["SPOTRUN_ATTEMPT"]
notice = Path(os.environ["SPOTRUN_NOTICE_FILE"])
if os.environ.get("NOTICE_ENDS_WORK") and attempt == "1":
    Path(os.environ["LEDGER"] + ".ready").write_text(attempt)
    deadline = time.monotonic() + 60
    while not notice.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
else:
    time.sleep(float(os.environ.get("WORK_S", "0")))
line = f"{os.environ['SPOTRUN_JOB_ID']} {attempt}\n".encode()
fd = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
if os.getppid() != parent:
    os._exit(1)
# The side effect and the exit as close together as a process can make them: no interpreter
# shutdown in between, during which a killed agent would leave a done job looking lost.
os.write(fd, line)
os._exit(0)
