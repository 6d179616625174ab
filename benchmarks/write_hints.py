"""What the write hint costs a save: torch.save through `atomic_write` with and without fingerprinting.

    .venv/bin/python benchmarks/write_hints.py                  # 256 MiB, median of 5
    .venv/bin/python benchmarks/write_hints.py --size-mb 64 --repeats 3 --json

The state is a dict of float32 tensors (4-16 MiB each, GPT-2-medium-like layers). Every variant
writes the same state into the same directory in the same round; the order rotates between
rounds (on a VM the first to allocate page cache after a delete is favoured). Variants:

- `torch.save(path)`: torch's own file writer, no fsync, no rename (what users do unprotected).
- `file object`: torch.save into a plain `open(path, "wb")` (no fsync): the baseline of the
  hint's own cost, since `atomic_write` hands torch a file object.
- `fingerprinting writer`: the same through `FingerprintingWriter` (no fsync): the hashing cost.
- `atomic_path + torch.save(tmp)`: temp file, fsync, rename; torch writes the path itself (no hint).
- `atomic_write, no hint`: the old `atomic_write` (temp file object, fsync, rename).
- `atomic_write`: as shipped (writer, fsync, rename, sidecar).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spotrun.sdk.atomic import atomic_path, atomic_write, replace_via_temp
from spotrun.sdk.fingerprints import ChunkFingerprints, FingerprintingWriter

MIB = 1024 * 1024
LAYER_MIB = (16, 4, 4, 8)  # a transformer block's matrices, repeated


def build_state(size_mb: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state, total, i = {}, 0, 0
    while total < size_mb:
        mb = min(LAYER_MIB[i % len(LAYER_MIB)], size_mb - total)
        state[f"layer{i}.weight"] = torch.randn(mb * MIB // 4, generator=gen)
        state[f"layer{i}.bias"] = torch.randn(1024, generator=gen)
        total += mb
        i += 1
    return state


def variants(state: dict[str, torch.Tensor]) -> dict[str, Callable[[Path], None]]:
    def plain_path(path: Path) -> None:
        torch.save(state, path)

    def file_object(path: Path) -> None:
        with open(path, "wb") as f:
            torch.save(state, f)

    def fingerprinting(path: Path) -> None:
        with open(path, "wb") as f:
            writer = FingerprintingWriter(f)
            torch.save(state, writer)
            assert writer.result() is not None

    def atomic_path_save(path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def old_atomic_write(path: Path) -> None:
        with replace_via_temp(path) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)

    def new_atomic_write(path: Path) -> None:
        with atomic_write(path) as f:
            torch.save(state, f)

    return {
        "torch.save(path)": plain_path,
        "file object": file_object,
        "fingerprinting writer": fingerprinting,
        "atomic_path + torch.save(tmp)": atomic_path_save,
        "atomic_write, no hint (old)": old_atomic_write,
        "atomic_write (new)": new_atomic_write,
    }


def hash_only(state: dict[str, torch.Tensor]) -> float:
    """Seconds to fingerprint the tensors' bytes alone, in memory."""
    start = time.perf_counter()
    prints = ChunkFingerprints()
    for tensor in state.values():
        prints.update(tensor.numpy())
    prints.result()
    return time.perf_counter() - start


def run(size_mb: int, repeats: int, directory: Path) -> dict:
    state = build_state(size_mb)
    todo = variants(state)
    names = list(todo)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            path = directory / "ckpt.pt"
            path.unlink(missing_ok=True)
            start = time.perf_counter()
            todo[name](path)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "size_mb": size_mb,
        "repeats": repeats,
        "median_s": medians,
        "all_s": times,
        "hash_only_s": statistics.median(hash_only(state) for _ in range(repeats)),
        "hint_overhead_ratio": medians["atomic_write (new)"] / medians["atomic_write, no hint (old)"],
        "writer_overhead_ratio": medians["fingerprinting writer"] / medians["file object"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="checkpoint size in MiB")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        result = run(args.size_mb, args.repeats, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"saving {result['size_mb']} MiB of tensors (median of {result['repeats']})")
    table.add_column("variant")
    table.add_column("median s", justify="right")
    table.add_column("min-max s", justify="right")
    table.add_column("GB/s", justify="right")
    for name, median in result["median_s"].items():
        runs = result["all_s"][name]
        gbps = result["size_mb"] * MIB / median / 1e9
        table.add_row(name, f"{median:.3f}", f"{min(runs):.3f}-{max(runs):.3f}", f"{gbps:.2f}")
    console = Console()
    console.print(table)
    console.print(
        f"fingerprinting alone (in memory): {result['hash_only_s']:.3f} s; "
        f"writer / file object: {result['writer_overhead_ratio']:.2f}x; "
        f"atomic_write new / old: {result['hint_overhead_ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
