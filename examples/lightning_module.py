"""A Lightning module that survives reclaims: checkpoints and resumes through SpotrunCallback.

    python examples/lightning_module.py --max-steps 60 --output result.json
    spotrun exec -- python examples/lightning_module.py --max-steps 60 --output result.json
    spotrun check --workdir examples -o result.json -- python lightning_module.py --max-steps 40 --step-time 0.15

On a reclaim notice the callback saves at the next batch boundary and stops the trainer; the
script exits 75 so the agent reruns it, and the rerun continues from that checkpoint. The data
loader saves its position in the epoch, so a resumed run ends with bitwise the same weights as
an uninterrupted one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import spotrun
from spotrun.lightning import SpotrunCallback, resume_path

EXIT_RECLAIMED = 75


class Regression(pl.LightningModule):
    def __init__(self, step_time: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
        self.step_time = step_time
        self.last_loss = float("nan")

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.last_loss = loss.item()
        time.sleep(self.step_time)
        print(f"step {self.global_step} loss {self.last_loss:.6f}", flush=True)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.7)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ResumableLoader(DataLoader):
    """A DataLoader that continues a resumed epoch where it stopped, so the resumed run sees the
    same batches as an uninterrupted one. Lightning saves `state_dict()` in its checkpoint and
    hands it back on resume; a plain DataLoader would restart the epoch from its first batch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.served = 0  # batches handed out in the current epoch
        self.skip = 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        self.served = skip
        for index, batch in enumerate(super().__iter__()):
            if index >= skip:
                self.served += 1
                yield batch

    def state_dict(self) -> dict:
        return {"served": self.served}

    def load_state_dict(self, state: dict) -> None:
        self.skip = state["served"] % len(self)  # a checkpoint at an epoch's end starts a new epoch


def data(seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=g)
    return ResumableLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=16, shuffle=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=20, help="checkpoint every N steps")
    parser.add_argument("--output", default="result.json", help="where to write the final result")
    parser.add_argument("--step-time", type=float, default=0.0, help="seconds to add per step (demos)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed, verbose=False)
    model = Regression(args.step_time)
    callback = SpotrunCallback(every_n_steps=args.every)
    trainer = pl.Trainer(
        max_steps=args.max_steps,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,  # SpotrunCallback is the checkpointing
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    ckpt_path = resume_path()
    print(f"attempt {spotrun.attempt()}: resuming from {ckpt_path or 'scratch'}", flush=True)
    try:
        trainer.fit(model, data(args.seed), ckpt_path=ckpt_path)
    except SIGTERMException:
        pass  # Lightning stops this way on the agent's SIGTERM, after SpotrunCallback saved
    if callback.stopped_for_notice:
        print(f"notice: saved step {trainer.global_step}, exiting to resume elsewhere", flush=True)
        return EXIT_RECLAIMED
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values()))
    result = {"global_step": trainer.global_step, "loss": model.last_loss, "weights_sha256": digest.hexdigest()}
    spotrun.save_atomic(args.output, json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
