"""A tiny resumable job for the controller tests: counts to STEPS, folding each step into a
checksum, saving (step, checksum) after every step to COUNTER_STATE (outside the instance's
scratch dir, standing in for the checkpoint store), and writing the checksum to COUNTER_RESULT.

A run reclaimed any number of times must end with the same checksum as one uninterrupted run.
"""

import json
import os
import signal
import sys
import time

state_path = os.environ["COUNTER_STATE"]
steps, step_s = int(os.environ.get("STEPS", "20")), float(os.environ.get("STEP_S", "0.05"))


def save(step: int, acc: int) -> None:
    tmp = f"{state_path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"step": step, "acc": acc}, f)
    os.replace(tmp, state_path)


try:
    with open(state_path) as f:
        saved = json.load(f)
    step, acc = saved["step"], saved["acc"]
except FileNotFoundError:
    step, acc = 0, 0
print(f"starting at step {step} (attempt {os.environ.get('SPOTRUN_ATTEMPT', '?')})", flush=True)
signal.signal(signal.SIGTERM, lambda *_: (print(f"notice at step {step}", flush=True), sys.exit(143)))
while step < steps:
    acc = (acc * 31 + step + 7) % 1_000_003
    step += 1
    save(step, acc)
    print(f"step {step}", flush=True)
    time.sleep(step_s)
with open(os.environ["COUNTER_RESULT"], "w") as f:
    f.write(str(acc))
print(f"done {acc}", flush=True)
