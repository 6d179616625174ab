"""Metaflow: a monitor writes a file when the instance is to be reclaimed; the step checks for
it and checkpoints. No signal handling at all."""

import os
import sys

import torch

import _tiny

CKPT = os.path.join(os.environ["SPOTRUN_CHECKPOINT_DIR"], "state.pt")
model, opt = _tiny.make()
start = 0
if os.path.exists(CKPT):
    state = torch.load(CKPT)
    model.load_state_dict(state["model"])
    start = state["step"] + 1
for step in range(start, _tiny.STEPS):
    _tiny.step(model, opt, step)
    print(f"step {step}", flush=True)
    if os.path.exists(os.environ["SPOTRUN_NOTICE_FILE"]):
        torch.save({"model": model.state_dict(), "step": step}, CKPT)
        sys.exit(0)
_tiny.write_result("result.json", model)
