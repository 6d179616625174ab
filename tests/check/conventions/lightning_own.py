"""Lightning as its docs teach: its own ModelCheckpoint (last.ckpt each epoch) and
`trainer.fit(ckpt_path="last")`, its default progress bar (Rich's, which draws nothing off a
terminal, when rich is installed); nothing from spotrun. Lightning turns SIGTERM into an exception."""

import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

import _tiny


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model, _ = _tiny.make()

    def training_step(self, batch, batch_idx):
        x, y = batch
        time.sleep(_tiny.STEP_TIME)
        return torch.nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


pl.seed_everything(0)
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_tiny.X[:10].reshape(-1, 4), _tiny.Y[:10].reshape(-1, 1)), batch_size=8)
module = Tiny()
trainer = pl.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_model_summary=False,
                     callbacks=[ModelCheckpoint(dirpath="ckpt", save_last=True)])
try:
    trainer.fit(module, data, ckpt_path="last")
except SIGTERMException:
    raise SystemExit(0)
_tiny.write_result("result.json", module.model)
