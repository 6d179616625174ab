"""The AWS guide: its own IMDS poller in a thread, `checkpoint_epoch_N.pt` files found by glob,
epochs as the only progress it prints."""

import glob
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request

import torch

import _tiny

EPOCH_STEPS = 5
noticed = threading.Event()


def poll() -> None:
    base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
    while not noticed.is_set():
        try:
            token = urllib.request.urlopen(urllib.request.Request(
                base + "/latest/api/token", method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}), timeout=1).read().decode()
            urllib.request.urlopen(urllib.request.Request(
                base + "/latest/meta-data/spot/instance-action",
                headers={"X-aws-ec2-metadata-token": token}), timeout=1)
            noticed.set()
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)


threading.Thread(target=poll, daemon=True).start()
model, opt = _tiny.make()
start = 0
found = glob.glob("ckpt/checkpoint_epoch_*.pt")
if found:
    latest = max(found, key=lambda p: int(re.search(r"(\d+)\.pt$", p).group(1)))
    state = torch.load(latest)
    model.load_state_dict(state["model"])
    start = state["epoch"] + 1
os.makedirs("ckpt", exist_ok=True)
for epoch in range(start, _tiny.STEPS // EPOCH_STEPS):
    for i in range(EPOCH_STEPS):
        _tiny.step(model, opt, epoch * EPOCH_STEPS + i)
    torch.save({"model": model.state_dict(), "epoch": epoch}, f"ckpt/checkpoint_epoch_{epoch}.pt")
    print(f"epoch {epoch} done, saved ckpt/checkpoint_epoch_{epoch}.pt", flush=True)
    if noticed.is_set():
        print("spot interruption notice: exiting", flush=True)
        sys.exit(0)
_tiny.write_result("result.json", model)
