"""A plain PyTorch training loop that survives reclaims and resumes bit for bit.

    python examples/torch_loop.py --steps 200 --output result.json
    spotrun exec -- python examples/torch_loop.py --steps 200 --output result.json
    spotrun check --workdir examples -o result.json -- python torch_loop.py --steps 40 --step-time 0.15

It checkpoints into `spotrun.checkpoint_dir()` every `--every` steps and at once when a reclaim
notice comes, resumes from the newest checkpoint when started again, and writes the final loss
and a hash of the final weights to `--output`: an interrupted-and-resumed run writes the same
hash as an uninterrupted one. Every source of randomness (dropout, data, Python, NumPy) is
drawn from the global RNGs that the Checkpointer saves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time

import numpy as np
import torch
from torch import nn

import spotrun
from spotrun.torch import Checkpointer

EXIT_RECLAIMED = 75  # "try again later": the agent and the controller read it as a reclaim


def build(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, object, torch.amp.GradScaler]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.7)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    return model, optimizer, scheduler, scaler


def train_step(model, optimizer, scheduler, scaler) -> float:
    """One step whose data comes from the global RNGs, so a resume must restore them all."""
    x = torch.randn(16, 8)
    noise = torch.from_numpy(np.random.normal(0, 0.01, size=(16, 1))).float()
    y = x.sum(dim=1, keepdim=True) * random.uniform(0.9, 1.1) + noise
    loss = nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.item()


def weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="total training steps")
    parser.add_argument("--every", type=int, default=25, help="checkpoint every N steps")
    parser.add_argument("--output", default="result.json", help="where to write the final result")
    parser.add_argument("--step-time", type=float, default=0.0, help="seconds to add per step (demos)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model, optimizer, scheduler, scaler = build(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    with Checkpointer(keep=2) as ckpt:
        resume = ckpt.restore(model, optimizer, scheduler=scheduler, scaler=scaler)
        start = resume.step + 1 if resume else 0
        print(f"attempt {spotrun.attempt()}: starting at step {start} of {args.steps}", flush=True)
        loss = resume.extra["loss"] if resume else float("nan")
        for step in range(start, args.steps):
            loss = train_step(model, optimizer, scheduler, scaler)
            time.sleep(args.step_time)
            print(f"step {step} loss {loss:.6f}", flush=True)
            spotrun.report_progress(step, loss=loss)
            if ckpt.maybe_save(step, every=args.every, extra={"loss": loss}):
                print(f"notice: saved step {step}, exiting to resume elsewhere", flush=True)
                return EXIT_RECLAIMED
    result = {"steps": args.steps, "loss": loss, "weights_sha256": weights_hash(model)}
    spotrun.save_atomic(args.output, json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
