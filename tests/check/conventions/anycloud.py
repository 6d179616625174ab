"""anycloud: a fixed checkpoint directory (`/mnt/checkpoint`-style), saved on SIGTERM and every
ten steps."""

import os
import signal
import sys

import _tiny

CKPT = os.path.join(sys.argv[1], "state.pt")
stop = False


def on_term(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
model, opt = _tiny.make()
start = _tiny.load(CKPT, model)
for step in range(start, _tiny.STEPS):
    _tiny.step(model, opt, step)
    print(f"step {step}", flush=True)
    if stop or step % 10 == 9:
        _tiny.save(CKPT, model, step)
    if stop:
        sys.exit(0)
_tiny.write_result("result.json", model)
