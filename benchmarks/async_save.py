"""How long a checkpoint stalls training: Checkpointer's async save vs a synchronous torch.save.

    .venv/bin/python benchmarks/async_save.py                      # ~500 MB, CPU
    .venv/bin/python benchmarks/async_save.py --device cuda --json # on a GPU machine

Both sides save the same state through the same durable path (temp file, fsync, rename) into
the same directory, in the same run. The baseline's stall is the whole `torch.save`; the async
stall is what `Checkpointer.save()` costs the loop (the copy into reused staging buffers; on
CUDA, until the device-to-host copy the training stream waits on has finished). Between saves
the weights are changed in place, as an optimizer step would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from spotrun.sdk.atomic import atomic_write
from spotrun.torch import Checkpointer

CHUNK_MB = 32


def build_state(size_mb: int, device: str) -> nn.Module:
    """A module of float32 parameters adding up to `size_mb`, in 32 MB tensors like a model's layers."""
    count, rest = divmod(size_mb, CHUNK_MB)
    sizes = [CHUNK_MB] * count + ([rest] if rest else [])
    params = [nn.Parameter(torch.randn(mb * 2**18, device=device)) for mb in sizes]
    return nn.ParameterList(params)


def sync_device(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_step(model: nn.Module, device: str) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3)
    sync_device(device)


def sync_save(model: nn.Module, path: Path, device: str) -> float:
    """Seconds the loop stalls for a synchronous, durable torch.save."""
    train_step(model, device)
    start = time.perf_counter()
    with atomic_write(path, "wb") as f:
        torch.save(model.state_dict(), f)
    return time.perf_counter() - start


def async_save(ckpt: Checkpointer, step: int, model: nn.Module, device: str) -> tuple[float, float]:
    """(seconds the loop stalls, seconds until the checkpoint is durable) for one async save."""
    train_step(model, device)
    start = time.perf_counter()
    ckpt.save(step)
    sync_device(device)  # the stall includes the D2H copy the training stream must wait for
    stalled = time.perf_counter() - start
    train_step(model, device)  # the loop goes on while the file is written
    ckpt.wait()
    return stalled, time.perf_counter() - start


def measure(model: nn.Module, directory: Path, repeats: int, device: str) -> dict[str, list[float]]:
    """Alternate the two kinds of save, so both see the same machine load; warm-ups unmeasured."""
    times: dict[str, list[float]] = {"sync": [], "stall": [], "durable": []}
    with Checkpointer(directory / "async", keep=1, save_on_notice=False) as ckpt:
        ckpt.track(model=model)
        sync_save(model, directory / "sync.pt", device)
        async_save(ckpt, 0, model, device)  # allocates the staging buffers
        for step in range(1, repeats + 1):
            times["sync"].append(sync_save(model, directory / "sync.pt", device))
            stall, durable = async_save(ckpt, step, model, device)
            times["stall"].append(stall)
            times["durable"].append(durable)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=500, help="checkpoint size in MB (default 500)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="saves measured per side (median reported)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: this machine has no CUDA device; use --device cpu", file=sys.stderr)
        return 2
    if args.size_mb < 1 or args.repeats < 1:
        print("--size-mb and --repeats must be at least 1", file=sys.stderr)
        return 2

    torch.manual_seed(0)
    model = build_state(args.size_mb, args.device)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        times = measure(model, Path(tmp), args.repeats, args.device)
    median = {kind: statistics.median(values) for kind, values in times.items()}
    result = {
        "size_mb": args.size_mb,
        "device": args.device,
        "repeats": args.repeats,
        "sync_torch_save_s": median["sync"],
        "async_stall_s": median["stall"],
        "async_save_to_durable_s": median["durable"],
        "stall_ratio": median["stall"] / median["sync"],
        "target_ratio": 0.10,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


def print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"checkpoint stall, {r['size_mb']} MB on {r['device']} (median of {r['repeats']})")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_row("synchronous torch.save (baseline stall)", f"{r['sync_torch_save_s']:.3f}")
    table.add_row("async save: training stall", f"{r['async_stall_s']:.3f}")
    table.add_row("async save: until durable (in background)", f"{r['async_save_to_durable_s']:.3f}")
    verdict = "meets" if r["stall_ratio"] <= r["target_ratio"] else "misses"
    table.add_row(f"stall ratio ({verdict} the <= {r['target_ratio']:.0%} target)", f"{r['stall_ratio']:.1%}")
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
