"""A dependency-free training job (pure Python) that checkpoints and resumes through the SDK.

    python examples/train.py --steps 300 --output result.json
    spotrun exec -- python examples/train.py --steps 300 --step-time 0.05 --output result.json

It fits y = 3x - 2 by SGD on noisy samples drawn from a seeded RNG. Its whole state (weights,
the RNG, the step) goes into each checkpoint, so a run that is reclaimed and resumed any number
of times writes exactly the same `--output` as one that never was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time

import spotrun

EXIT_RECLAIMED = 75  # "try again later": the agent and the controller read it as a reclaim


def sgd_step(state: dict, batch: int = 8, lr: float = 0.05) -> float:
    rng = random.Random()
    rng.setstate(state["rng"])
    xs = [rng.uniform(-1, 1) for _ in range(batch)]
    ys = [3 * x - 2 + rng.gauss(0, 0.1) for x in xs]
    state["rng"] = rng.getstate()
    errors = [state["w"] * x + state["b"] - y for x, y in zip(xs, ys)]
    state["w"] -= lr * 2 * sum(e * x for e, x in zip(errors, xs)) / batch
    state["b"] -= lr * 2 * sum(errors) / batch
    return sum(e * e for e in errors) / batch


def run(argv: list[str] | None = None, resume: bool = True) -> int:
    """The training job; `resume=False` is the classic bug of saving checkpoints but never loading them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="total training steps")
    parser.add_argument("--every", type=int, default=20, help="checkpoint every N steps")
    parser.add_argument("--output", default="result.json", help="where to write the final result")
    parser.add_argument("--step-time", type=float, default=0.0, help="seconds to add per step (demos)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    spotrun.on_notice(lambda notice: None)  # the agent's SIGTERM now sets should_stop() instead of killing us
    loaded = spotrun.load_latest() if resume else None
    if loaded:
        state, step = loaded
        start = step + 1
    else:
        state = {"w": 0.0, "b": 0.0, "rng": random.Random(args.seed).getstate(), "loss": float("nan")}
        start = 0
    print(f"attempt {spotrun.attempt()}: starting at step {start} of {args.steps}", flush=True)
    for step in range(start, args.steps):
        state["loss"] = sgd_step(state)
        time.sleep(args.step_time)
        print(f"step {step} loss {state['loss']:.6f}", flush=True)
        spotrun.report_progress(step, loss=state["loss"])
        if spotrun.should_stop():
            spotrun.save(state, step=step)
            print(f"notice: saved step {step}, exiting to resume elsewhere", flush=True)
            return EXIT_RECLAIMED
        if step % args.every == 0:
            spotrun.save(state, step=step)
    weights = {"w": state["w"], "b": state["b"]}
    result = {
        "steps": args.steps,
        "loss": state["loss"],
        **weights,
        "weights_sha256": hashlib.sha256(json.dumps(weights).encode()).hexdigest(),
    }
    spotrun.save_atomic(args.output, json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
