"""Transformers: on a reclaim notice save a checkpoint at the step's end and stop; resume from it.

The Trainer writes `checkpoint-<step>/` as many files, none of them atomically, while the agent
may be syncing the directory. So the callback publishes a marker listing every file and its
size once the Trainer has finished the checkpoint (manifest last, as the store does), and
`resume_checkpoint()` only returns a checkpoint whose marker matches what is on disk.
The callback also reports each step, save and restore (`state.global_step`) as SDK events, so
`spotrun check` measures a Trainer script precisely with no code of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from spotrun.sdk.atomic import save_atomic
from spotrun.sdk.checkpoint import checkpoint_dir
from spotrun.sdk.events import emit, report_progress
from spotrun.sdk.notice import NoticeListener, should_stop

MARKER = "spotrun-complete.json"


def _files(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MARKER
    }


def is_complete(folder: Path) -> bool:
    """Whether every file the marker lists is there with its size (a torn sync fails this)."""
    try:
        listed = json.loads((folder / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == size for name, size in listed.items()
    )


def resume_checkpoint(output_dir: str | Path | None = None) -> str | None:
    """The newest complete `checkpoint-<step>` for `trainer.train(resume_from_checkpoint=...)`.

    None on a fresh start, so the call is the same on the first attempt and every later one.
    """
    root = Path(output_dir) if output_dir is not None else checkpoint_dir()
    steps = []
    for folder in root.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = folder.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if suffix.isdigit() and folder.is_dir():
            steps.append((int(suffix), folder))
    for _, folder in sorted(steps, reverse=True):
        if is_complete(folder):
            return str(folder)
    return None


class SpotrunCallback(TrainerCallback, NoticeListener):
    """Save and stop at the end of the step in which a notice came; mark finished checkpoints.

        args = TrainingArguments(output_dir=str(spotrun.checkpoint_dir()), save_steps=100, ...)
        callback = SpotrunCallback()
        trainer = Trainer(model, args, callbacks=[callback], ...)
        trainer.train(resume_from_checkpoint=spotrun.hf.resume_checkpoint(args.output_dir))
        if callback.stopped_for_notice:
            sys.exit(75)
    """

    def __init__(self, save_on_notice: bool = True) -> None:
        self.save_on_notice = save_on_notice
        self.stopped_for_notice = False
        NoticeListener.__init__(self, save_on_notice)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        # The Trainer has loaded the checkpoint's state by now; a fresh start is at step 0.
        if state.is_world_process_zero and state.global_step > 0:
            emit("restore", step=state.global_step)
        return control

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.is_world_process_zero:
            report_progress(state.global_step)
        if self.save_on_notice and not self.stopped_for_notice and should_stop():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_for_notice = True
        return control

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            save_atomic(folder / MARKER, json.dumps({"step": state.global_step, "files": _files(folder)}))
            emit("save", step=state.global_step)
        return control
