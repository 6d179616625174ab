"""A Transformers Trainer run that survives reclaims: a tiny GPT-2 built from a config, random tokens.

    python examples/hf_trainer.py --max-steps 40 --output result.json
    spotrun exec -- python examples/hf_trainer.py --max-steps 40 --output result.json
    spotrun check --workdir examples -o result.json -- python hf_trainer.py --max-steps 40 --step-time 0.15

Nothing is downloaded. Checkpoints go to `spotrun.checkpoint_dir()` as the Trainer's own
`checkpoint-<step>/` folders; on a notice SpotrunCallback saves at the step's end and stops, the
script exits 75, and the next attempt resumes through `resume_checkpoint()`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

import spotrun
from spotrun.hf import SpotrunCallback, resume_checkpoint

EXIT_RECLAIMED = 75


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, size: int, length: int, vocab: int, seed: int) -> None:
        self.tokens = torch.randint(0, vocab, (size, length), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.tokens[i]}


class Progress(TrainerCallback):
    """Prints each step (and slows it for demos) so a run can be watched and reclaimed mid-way."""

    def __init__(self, step_time: float) -> None:
        self.step_time = step_time

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.step_time)
        print(f"step {state.global_step}", flush=True)


def final_loss(model: GPT2LMHeadModel, dataset: RandomTokens) -> float:
    """Loss of the final weights on fixed data: the same for every run that ends with the same weights
    (the Trainer's `training_loss` averages only the steps of the last attempt)."""
    model.eval()
    with torch.no_grad():
        return model(input_ids=dataset.tokens[:32], labels=dataset.tokens[:32]).loss.item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=20, help="checkpoint every N steps")
    parser.add_argument("--output", default="result.json", help="where to write the final result")
    parser.add_argument("--step-time", type=float, default=0.0, help="seconds to add per step (demos)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(config)
    dataset = RandomTokens(256, 32, config.vocab_size, args.seed)
    training_args = TrainingArguments(
        output_dir=str(spotrun.checkpoint_dir()),
        max_steps=args.max_steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        save_steps=args.every,
        save_total_limit=2,
        logging_steps=10,
        seed=args.seed,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
    )
    callback = SpotrunCallback()
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        callbacks=[callback, Progress(args.step_time)],
    )
    resume = resume_checkpoint(training_args.output_dir)
    print(f"attempt {spotrun.attempt()}: resuming from {resume or 'scratch'}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    if callback.stopped_for_notice:
        print(f"notice: saved step {trainer.state.global_step}, exiting to resume elsewhere", flush=True)
        return EXIT_RECLAIMED
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values()))
    result = {
        "global_step": trainer.state.global_step,
        "loss": final_loss(model, dataset),
        "weights_sha256": digest.hexdigest(),
    }
    spotrun.save_atomic(args.output, json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
