"""Lightning: checkpoint into the job's checkpoint directory, and on a reclaim notice save and stop.

Lightning's own checkpoint has everything a resume needs (weights, optimizers, schedulers, loop
progress, callbacks); this callback decides *when* (every N steps, and at the first batch
boundary after a notice) and makes each file appear whole, so the agent never syncs a torn one.
It also reports each step, save and restore (counted in optimizer steps, `trainer.global_step`)
as SDK events, so `spotrun check` measures a Lightning script precisely with no code of its own.

Lightning reacts to SIGTERM itself: after the batch it raises `SIGTERMException` (a SystemExit)
out of `trainer.fit`. The callback saves before that happens; a script that wants to exit with
its own status catches the exception (see examples/lightning_module.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

from spotrun.sdk.atomic import atomic_path
from spotrun.sdk.checkpoint import checkpoint_dir, checkpoint_path, list_checkpoints, prune
from spotrun.sdk.events import emit, report_progress
from spotrun.sdk.notice import NoticeListener, should_stop

EXT = "ckpt"


def resume_path(dirpath: str | Path | None = None, prefix: str = "ckpt") -> str | None:
    """The newest checkpoint for `trainer.fit(model, ckpt_path=...)`; None on a fresh start."""
    found = list_checkpoints(dirpath, prefix, EXT)
    return str(found[-1][1]) if found else None


class SpotrunCallback(pl.Callback, NoticeListener):
    """Save every `every_n_steps` optimizer steps and when a notice comes; then stop cleanly.

        callback = SpotrunCallback(every_n_steps=100)
        trainer = Trainer(callbacks=[callback], enable_checkpointing=False, ...)
        try:
            trainer.fit(model, ckpt_path=spotrun.lightning.resume_path())
        except SIGTERMException:  # Lightning's reaction to the agent's signal; we saved already
            pass
        if callback.stopped_for_notice:
            sys.exit(75)
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        every_n_steps: int | None = None,
        keep: int = 2,
        save_on_notice: bool = True,
        prefix: str = "ckpt",
    ) -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else checkpoint_dir()
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.save_on_notice = save_on_notice
        self.prefix = prefix
        self.stopped_for_notice = False
        NoticeListener.__init__(self, save_on_notice)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Every rank must agree, or some would wait forever in save_checkpoint's barrier.
        noticed = trainer.strategy.reduce_boolean_decision(self.save_on_notice and should_stop(), all=False)
        step = trainer.global_step
        if trainer.is_global_zero:
            report_progress(step)
        if noticed:
            if not self.stopped_for_notice:  # min_steps can keep the loop going: save once
                self.save(trainer)
                self.stopped_for_notice = True
            trainer.should_stop = True
        elif self.every_n_steps and step % self.every_n_steps == 0:
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning turns SIGTERM into SIGTERMException at the next loop boundary, which can come
        # before any batch ends (at an epoch's end): the state is consistent there too, so save.
        if isinstance(exception, SIGTERMException) and self.save_on_notice and not self.stopped_for_notice:
            self.save(trainer)
            self.stopped_for_notice = True

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.is_global_zero:
            emit("restore", step=int(checkpoint["global_step"]))

    def save(self, trainer: pl.Trainer) -> Path:
        path = checkpoint_path(trainer.global_step, self.dirpath, self.prefix, EXT)
        if trainer.is_global_zero:
            with atomic_path(path) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)
            prune(self.dirpath, self.keep, self.prefix, EXT)
            emit("save", step=trainer.global_step)
        else:
            trainer.save_checkpoint(path, weights_only=False)  # a collective: only rank zero writes
        return path
