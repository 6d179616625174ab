"""ECI: a plain `torch.save` to a fixed absolute path every ten steps, no signal handling."""

import os
import sys

import torch

import _tiny

CKPT = os.path.join(sys.argv[1], "model.pt")
model, opt = _tiny.make()
start = _tiny.load(CKPT, model)
os.makedirs(sys.argv[1], exist_ok=True)
for step in range(start, _tiny.STEPS):
    _tiny.step(model, opt, step)
    print(f"step {step}", flush=True)
    if step % 10 == 9:
        torch.save({"model": model.state_dict(), "step": step}, CKPT)
_tiny.write_result("result.json", model)
