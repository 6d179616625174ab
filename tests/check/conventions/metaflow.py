"""Metaflow: a monitor writes a file when the instance is to be reclaimed; the step checks for
it and checkpoints. No signal handling at all."""

import os
import sys

import _tiny

CKPT = os.path.join(os.environ["SPOTRUN_CHECKPOINT_DIR"], "state.pt")
model, opt = _tiny.make()
start = _tiny.load(CKPT, model)
for step in range(start, _tiny.STEPS):
    _tiny.step(model, opt, step)
    print(f"step {step}", flush=True)
    if os.path.exists(os.environ["SPOTRUN_NOTICE_FILE"]):
        _tiny.save(CKPT, model, step)
        sys.exit(0)
_tiny.write_result("result.json", model)
