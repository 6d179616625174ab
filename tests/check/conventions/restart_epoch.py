"""Restores the weights but not the epoch: it trains every epoch again on top of them."""

import os
import signal
import sys

import torch

import _tiny

CKPT = os.path.join(os.environ["SPOTRUN_CHECKPOINT_DIR"], "model.pt")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
model, opt = _tiny.make()
if os.path.exists(CKPT):
    model.load_state_dict(torch.load(CKPT))
for epoch in range(_tiny.STEPS // 5):
    for i in range(5):
        _tiny.step(model, opt, epoch * 5 + i)
    torch.save(model.state_dict(), CKPT)
    print(f"epoch {epoch}", flush=True)
_tiny.write_result("result.json", model)
