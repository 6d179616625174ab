"""Lightning: a reclaimed trainer saves at a batch boundary and stops; a second process resumes it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from spotrun.sdk.checkpoint import list_checkpoints

from .reclaim import RECLAIMED, example_cmd, reclaim_when, run_to_end


def test_reclaimed_trainer_resumes_in_a_new_process(ckpt_env, tmp_path):
    output = tmp_path / "result.json"
    args = ["--max-steps", "80", "--every", "1000", "--output", str(output)]
    code, log = reclaim_when(example_cmd("lightning_module.py", *args, "--step-time", "0.2"), ckpt_env, "step 5 ")
    assert code == RECLAIMED, log
    saved = int(re.search(r"notice: saved step (\d+)", log).group(1))
    assert 5 < saved < 80
    assert not output.exists()
    ckpt_dir = Path(ckpt_env["SPOTRUN_CHECKPOINT_DIR"])
    assert [step for step, _ in list_checkpoints(ckpt_dir, ext="ckpt")] == [saved]

    Path(ckpt_env["SPOTRUN_NOTICE_FILE"]).unlink(missing_ok=True)
    resumed = run_to_end(example_cmd("lightning_module.py", *args), ckpt_env, attempt=2)
    assert f"resuming from {ckpt_dir / f'ckpt-{saved:012d}.ckpt'}" in resumed.stdout
    first_step = int(re.search(r"^step (\d+) ", resumed.stdout, re.M).group(1))
    assert first_step == saved  # continues where it stopped, not from step 0
    assert json.loads(output.read_text())["global_step"] == 80


EPOCH_END_SIGTERM = """
import os, signal, sys
import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, TensorDataset
from spotrun.lightning import SpotrunCallback

class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()
    def on_train_epoch_end(self):
        os.kill(os.getpid(), signal.SIGTERM)  # after the epoch's last batch: no batch end follows
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

callback = SpotrunCallback()
trainer = pl.Trainer(max_epochs=3, callbacks=[callback], logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
try:
    trainer.fit(Module(), DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4))
except SIGTERMException:
    sys.exit(75 if callback.stopped_for_notice else 1)
sys.exit(2)
"""


def test_sigterm_at_an_epoch_boundary_still_saves(ckpt_env):
    """Lightning can raise SIGTERMException before any batch end sees the signal; the save happens anyway."""
    proc = subprocess.run([sys.executable, "-c", EPOCH_END_SIGTERM], env=ckpt_env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == RECLAIMED, proc.stdout + proc.stderr
    ckpt_dir = Path(ckpt_env["SPOTRUN_CHECKPOINT_DIR"])
    assert [step for step, _ in list_checkpoints(ckpt_dir, ext="ckpt")] == [4]  # one epoch of 4 batches
