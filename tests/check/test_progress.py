"""StepWatch reads only what was appended, yet always agrees with a full re-read."""

from __future__ import annotations

import json
from pathlib import Path

from spotrun.check.progress import StepWatch, attempt_progress


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def event(attempt: int, step: int, kind: str = "progress") -> str:
    return json.dumps({"event": kind, "attempt": str(attempt), "step": step}) + "\n"


def test_the_watch_agrees_with_a_full_read_as_the_files_grow(tmp_path: Path):
    events, log = tmp_path / "events.jsonl", tmp_path / "attempt.log"
    output = StepWatch(events, log, 2, "step")
    assert output.last() is None  # neither file exists yet

    append(log, "spotrun: step 99 is the agent talking\nstep 3 loss 0.5\n")
    assert output.last() == attempt_progress(events, log, 2, "step").last == 3  # no events: the output's steps

    watch = StepWatch(events, log, 2, "events")
    append(events, event(1, 50) + event(2, 7) + event(2, 40, kind="save"))
    assert watch.last() == attempt_progress(events, log, 2).last == 7  # events win; other attempts ignored

    half = event(2, 12)
    append(events, half[:10])  # a line still being written is not read yet...
    assert watch.last() == 7
    append(events, half[10:] + event(2, 9))
    assert watch.last() == attempt_progress(events, log, 2).last == 12  # ...but whole once finished


def lines(tmp_path: Path, text: str, kind: str | None = None):
    log = tmp_path / "attempt.log"
    log.write_text(text)
    return attempt_progress(tmp_path / "none.jsonl", log, 1, kind)


def test_progress_is_read_from_what_real_code_prints(tmp_path: Path):
    json_lines = lines(tmp_path, '{"step": 4, "loss": 0.1}\n{"global_step": 5}\n{"loss": 0.2}\n{"step": 6}\n')
    assert (json_lines.source, json_lines.steps) == ("step", [4, 5, 6])
    hf = lines(tmp_path, "{'loss': 0.5, 'grad_norm': 1.0, 'learning_rate': 0.001, 'epoch': 0.5}\n"
                         "  0%|          | 0/60 [00:00<?, ?it/s]\r 52%|#####     | 31/60 [00:03<00:03, 9.5it/s]\r"
                         " 53%|#####     | 32/60 [00:03<00:03, 9.5it/s]\r 55%|#####     | 33/60 [00:03<00:03, 9.5it/s]\n")
    assert (hf.source, hf.steps) == ("bar", [31, 32, 33])  # the bar's first draw (0/60) is no progress
    lightning = lines(tmp_path, "Restored all states from the checkpoint at ckpt/last.ckpt\n"
                                "Epoch 2:  10%|#   | 1/10 [00:00<00:00]\rEpoch 2:  20%|##  | 2/10 [00:00<00:00]\n"
                                "Epoch 2/5  ━━━━━━ 3/10 0:00:00\n")  # Rich's bar: "2/5" is the epoch, not the bar
    assert (lightning.source, lightning.steps) == ("bar", [21, 22, 23])  # epoch 2 of 10 batches: 20 before
    assert lightning.restore_seen
    epochs = lines(tmp_path, "".join(f"epoch {e} done, saved ckpt/checkpoint_epoch_{e}.pt\n" for e in (3, 4, 5)))
    assert (epochs.source, epochs.steps) == ("epoch", [3, 4, 5])
    rich = lines(tmp_path, "Epoch 5/5  ━━━━━━━━━━━━ 10/10 0:00:00 • 0:00:00 18.86it/s\n")
    assert rich.source == "none"  # one final draw says nothing about the way there


def test_numbers_in_file_names_are_never_progress(tmp_path: Path):
    progress = lines(tmp_path, "saved /ckpt/step_711.pt\nwrote checkpoint-step-900.ckpt\nloading model_step700.bin\n")
    assert progress.source == "none" and progress.steps == []


def test_one_run_is_read_in_one_kind(tmp_path: Path):
    both = lines(tmp_path, "epoch 1\nstep 10\nepoch 2\nstep 20\nepoch 3\nstep 30\n")
    assert (both.source, both.steps) == ("step", [10, 20, 30])
    assert lines(tmp_path, "epoch 1\nstep 10\nepoch 2\n", kind="epoch").steps == [1, 2]  # as its baseline was read
