"""Checkpoint store throughput against raw copies of the same bytes, measured in the same run.

    .venv/bin/python benchmarks/store_bench.py                 # 1 GiB, file:// and moto S3
    .venv/bin/python benchmarks/store_bench.py --size 256MiB --json

The checkpoint is `--files` torch.save shards of float32 tensors (GPT-2-medium-sized blocks:
4-16 MiB matrices and small biases and norms). Baselines: a plain copy + fsync of each file (file://) and a raw `obstore.put` /
`obstore.get` of each file (S3, 8 files in parallel, single-part PUTs: moto's multipart is
slower than its plain PUT, so this is the stronger baseline). The S3 server is
moto in a separate process on 127.0.0.1. Then 10 % of the tensors change (an optimizer step on
some layers) and we measure the incremental snapshot twice: with the touched shards saved by
plain `torch.save(path)` (every byte of each rewritten shard must be read), and saved through
`spotrun.atomic_write` (write hints: only changed chunks are read). Then a notice-triggered
flush through the agent hook (time from `on_notice` to a published manifest, SDK-written
shards). Each timed step starts after `sync`, so none pays for the previous step's write-back.
Also printed: the time to save one shard each way, hash throughput and,
for several chunk sizes, bytes a 10 % change would upload — the numbers behind the format's
choice of hash and chunk size (docs/store-format.md).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


def parse_size(text: str) -> int:
    units = {"kib": 1024, "mib": MiB, "gib": 1024 * MiB, "": 1}
    t = text.strip().lower()
    for unit in ("kib", "mib", "gib"):
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * units[unit])
    return int(t)


# -- the checkpoint ------------------------------------------------------------------------------


# One transformer block of a GPT-2-medium-sized model (d=1024), in float32 bytes: the attention
# and MLP matrices carry the bytes, the layer norms and biases are the many small tensors.
BLOCK = {
    "attn.c_attn.weight": 12 * MiB,
    "attn.c_attn.bias": 12 * 1024,
    "attn.c_proj.weight": 4 * MiB,
    "attn.c_proj.bias": 4 * 1024,
    "ln_1.weight": 4 * 1024,
    "ln_2.weight": 4 * 1024,
    "mlp.c_fc.weight": 16 * MiB,
    "mlp.c_fc.bias": 16 * 1024,
    "mlp.c_proj.weight": 16 * MiB,
    "mlp.c_proj.bias": 4 * 1024,
}


@dataclass
class Checkpoint:
    """A checkpoint directory and its tensors, always saved by the same writer: torch.save lays
    a shard out differently for a path and for a file object, so switching writers between
    snapshots would rewrite far more than the changed tensors."""

    root: Path
    shards: list[dict]
    writer: str  # "plain" or "sdk" (save_shard)

    def change(self, fraction: float, seed: int) -> int:
        return change_tensors(self.root, self.shards, fraction, seed, self.writer)


def make_checkpoint(root: Path, total: int, files: int, seed: int, writer: str) -> Checkpoint:
    """`files` shards of whole blocks, saved by `writer`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    per_block = sum(BLOCK.values())
    blocks = max(1, round(total / per_block))
    shards: list[dict] = [{} for _ in range(min(files, blocks))]
    for b in range(blocks):
        for name, nbytes in BLOCK.items():
            shards[b % len(shards)][f"h.{b}.{name}"] = torch.randn(nbytes // 4, generator=gen)
    root.mkdir()
    for i, tensors in enumerate(shards):
        save_shard(tensors, root / f"shard-{i:02d}.pt", writer)
    return Checkpoint(root, shards, writer)


def save_shard(tensors: dict, path: Path, writer: str) -> float:
    """Write one shard as a job would: plain `torch.save(path)`, or through the SDK's
    `atomic_write` (never torn, and it leaves write hints); returns the seconds it took."""
    import torch

    from spotrun.sdk.atomic import atomic_write

    start = time.perf_counter()
    if writer == "plain":
        torch.save(tensors, path)
    else:
        with atomic_write(path) as f:
            torch.save(tensors, f)
    return time.perf_counter() - start


def change_tensors(root: Path, shards: list[dict], fraction: float, seed: int, writer: str) -> int:
    """An optimizer step on a random `fraction` of the tensors (by bytes), the touched shards
    saved by `writer`; returns bytes changed."""
    rng = random.Random(seed)
    every = [(i, name) for i, shard in enumerate(shards) for name in shard]
    rng.shuffle(every)
    total = sum(t.numel() * 4 for shard in shards for t in shard.values())
    changed, touched = 0, set()
    for i, name in every:
        if changed >= fraction * total:
            break
        tensor = shards[i][name]
        tensor.add_(1e-3)
        changed += tensor.numel() * 4
        touched.add(i)
    for i in touched:
        save_shard(shards[i], root / f"shard-{i:02d}.pt", writer)
    return changed


# -- baselines -----------------------------------------------------------------------------------


def shards_in(root: Path) -> list[Path]:
    """The checkpoint's files (not the SDK's write hints beside them)."""
    return sorted(p for p in root.iterdir() if p.is_file())


def copy_fsync(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in shards_in(src):
        shutil.copyfile(f, dst / f.name)
        fd = os.open(dst / f.name, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def copy_plain(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in shards_in(src):
        shutil.copyfile(f, dst / f.name)


def raw_store(url: str):
    from obstore.store import from_url

    base, _, endpoint = url.partition("?endpoint=")
    return from_url(base, endpoint=endpoint, client_options={"allow_http": True})


def s3_raw_put(url: str, src: Path) -> None:
    import obstore

    store = raw_store(url)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda f: obstore.put(store, f"raw/{f.name}", f.read_bytes(), use_multipart=False),
                shards_in(src),
            )
        )


def s3_raw_get(url: str, src: Path, dst: Path) -> None:
    import obstore

    store = raw_store(url)
    dst.mkdir(parents=True, exist_ok=True)

    def one(f: Path) -> None:
        (dst / f.name).write_bytes(obstore.get(store, f"raw/{f.name}").bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, shards_in(src)))


# -- measurements --------------------------------------------------------------------------------


def settle() -> None:
    """Start each timed step with no write-back pending from the step before (or from writing
    the checkpoint): otherwise whichever side runs next pays for the other's dirty pages."""
    os.sync()


def timed(fn) -> float:
    settle()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def hash_throughput(chunk: int = 1 * MiB, total: int = 256 * MiB) -> dict[str, float]:
    import blake3

    data = memoryview(os.urandom(chunk))
    out = {}
    for name, fn in (
        ("sha256", lambda b: hashlib.sha256(b).digest()),
        ("blake2b", lambda b: hashlib.blake2b(b).digest()),
        ("blake3", lambda b: blake3.blake3(b).digest()),
    ):
        seconds = timed(lambda fn=fn: [fn(data) for _ in range(total // chunk)])
        out[name] = total / seconds / 1e9
    return out


def chunk_size_overhead(before: dict[str, bytes], after_dir: Path, changed: int) -> dict[str, float]:
    """Bytes a snapshot would upload / bytes changed, for several fixed chunk sizes."""
    import blake3

    out = {}
    for size in (MiB // 2, 1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB):
        uploaded = 0
        for name, old in before.items():
            new = (after_dir / name).read_bytes()
            for off in range(0, len(new), size):
                a, b = old[off : off + size], new[off : off + size]
                if a != b and blake3.blake3(a).digest() != blake3.blake3(b).digest():
                    uploaded += len(b)
        out[f"{size // 1024}KiB"] = uploaded / changed
    return out


async def measure_once(
    name: str, url: str, plain: Checkpoint, sdk: Checkpoint, work: Path, baseline_first: bool
) -> tuple[dict, dict]:
    """One round on a fresh store location, each of ours right beside its baseline."""
    from spotrun.notices.base import Notice, NoticeKind
    from spotrun.store import CheckpointSync, Store, restore

    ckpt, job = plain.root, "bench"

    def raw_upload() -> float:
        if name == "file":
            return timed(lambda: copy_fsync(ckpt, work / "raw-copy"))
        return timed(lambda: s3_raw_put(url, ckpt))

    # Alternate which side goes first: on a shared VM the first to allocate page cache after a
    # cleanup gets recently freed (cheap) pages, which would favour one side every round.
    raw_up = raw_upload() if baseline_first else 0.0
    store = Store.open(url, create=True)
    settle()
    full = await store.snapshot(job, 1, ckpt)
    if not baseline_first:
        raw_up = raw_upload()
    sdk_store = Store.open(url)  # its own: no reuse of what the plain job's snapshots uploaded
    settle()
    full_sdk = await sdk_store.snapshot("bench-sdk", 1, sdk.root)

    seed = len(list(work.iterdir()))
    before = {f.name: f.read_bytes() for f in shards_in(ckpt)} if name == "file" else None
    changed = plain.change(0.10, seed)
    overhead = chunk_size_overhead(before, ckpt, changed) if before else {}
    settle()
    inc = await store.snapshot(job, 1, ckpt)

    def raw_download() -> float:
        if name == "file":
            return timed(lambda: copy_plain(work / "raw-copy", work / "raw-copy-back"))
        return timed(lambda: s3_raw_get(url, ckpt, work / "raw-get"))

    raw_down = raw_download() if baseline_first else 0.0
    settle()
    start = time.perf_counter()
    await restore(store, job, work / "restore")
    restore_s = time.perf_counter() - start
    if not baseline_first:
        raw_down = raw_download()

    sdk_changed = sdk.change(0.10, seed)
    settle()
    inc_sdk = await sdk_store.snapshot("bench-sdk", 1, sdk.root)

    sdk.change(0.10, seed + 1000)
    hook = CheckpointSync(url, sdk.root, "bench-sdk", attempt=1)
    notice = Notice(provider="bench", kind=NoticeKind.RECLAIM, action="terminate", deadline=None)
    settle()
    start = time.perf_counter()
    await hook.on_notice(notice, budget_s=None)
    notice_s = time.perf_counter() - start
    assert hook.last_info is not None and hook.last_info.published
    for leftover in ("raw-copy", "raw-copy-back", "restore", "raw-get"):
        shutil.rmtree(work / leftover, ignore_errors=True)

    return {
        "size_bytes": full.total_size,
        "full_s": full.duration_s,
        "raw_upload_s": raw_up,
        "full_throughput_ratio": raw_up / full.duration_s,
        "incremental_s": inc.duration_s,
        "incremental_time_ratio": inc.duration_s / full.duration_s,
        "bytes_changed": changed,
        "bytes_uploaded": inc.uploaded_bytes,
        "upload_amplification": inc.uploaded_bytes / changed,
        "full_sdk_s": full_sdk.duration_s,
        "incremental_sdk_s": inc_sdk.duration_s,
        "incremental_sdk_time_ratio": inc_sdk.duration_s / full_sdk.duration_s,
        "incremental_sdk_read_bytes": inc_sdk.read_bytes,
        "upload_amplification_sdk": inc_sdk.uploaded_bytes / sdk_changed,
        "restore_s": restore_s,
        "raw_download_s": raw_down,
        "restore_throughput_ratio": raw_down / restore_s,
        "notice_to_durable_s": notice_s,
        "notice_uploaded_bytes": hook.last_info.uploaded_bytes,
    }, overhead


def writer_overhead(shard: dict, work: Path, repeat: int = 5) -> dict[str, float]:
    """Seconds to save one shard with plain torch.save and through the SDK (median, alternating)."""
    plain, sdk = [], []
    for _ in range(repeat):
        for writer, times in (("plain", plain), ("sdk", sdk)):
            settle()
            times.append(save_shard(shard, work / f"writer-{writer}.pt", writer))
    return {"plain_save_s": statistics.median(plain), "sdk_save_s": statistics.median(sdk)}


def medians(rounds: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return proc, endpoint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1GiB", help="checkpoint size, e.g. 256MiB, 1GiB")
    parser.add_argument("--files", type=int, default=8, help="number of shard files")
    parser.add_argument("--no-s3", action="store_true", help="skip the moto S3 runs")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per backend; the table shows medians")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    total = parse_size(args.size)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )

    work = Path(tempfile.mkdtemp(prefix="spotrun-store-bench-"))
    results = []
    moto = None
    try:
        backends = [("file", (work / "store").as_uri())]
        if not args.no_s3:
            moto, endpoint = start_moto()
            backends.append(("s3", f"s3://bench/store?endpoint={endpoint}"))
        hashes = hash_throughput()
        overhead: dict[str, float] = {}
        writer: dict[str, float] = {}
        for name, url in backends:
            plain = make_checkpoint(work / f"ckpt-{name}", total, args.files, 1, "plain")
            sdk = make_checkpoint(work / f"ckpt-{name}-sdk", total, args.files, 1, "sdk")
            rounds = []
            for i in range(args.repeat):
                where = (
                    url.replace("/store", f"/store-{i}") if name == "s3" else (work / f"store-{i}").as_uri()
                )
                result, found = asyncio.run(measure_once(name, where, plain, sdk, work, i % 2 == 0))
                overhead = overhead or found
                rounds.append(result)
            results.append({"backend": name, "rounds": len(rounds), **medians(rounds)})
            writer = writer or writer_overhead(plain.shards[0], work)
            for ckpt in (plain, sdk):
                shutil.rmtree(ckpt.root, ignore_errors=True)
            del plain, sdk
    finally:
        if moto:
            moto.terminate()
            moto.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "size": args.size,
        "files": args.files,
        "results": results,
        "hash_GBps": hashes,
        "shard_save": writer,
        "chunk_size_upload_amplification": overhead,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"checkpoint store, {args.size} in {args.files} shards, median of {args.repeat} rounds "
        "(ratios: baseline / ours, or ours / full)"
    )
    table.add_column("measure")
    for r in results:
        table.add_column(r["backend"], justify="right")
    rows = [
        ("full snapshot (s)", "full_s", "{:.2f}"),
        ("raw copy / obstore.put (s)", "raw_upload_s", "{:.2f}"),
        ("full throughput ratio (target >= 0.8)", "full_throughput_ratio", "{:.2f}"),
        ("incremental, 10% tensors changed (s)", "incremental_s", "{:.2f}"),
        ("incremental / full time (target <= 0.2)", "incremental_time_ratio", "{:.3f}"),
        ("bytes uploaded / bytes changed (target <= 1.2)", "upload_amplification", "{:.3f}"),
        ("full snapshot, SDK-written shards (s)", "full_sdk_s", "{:.2f}"),
        ("incremental, SDK-written shards (s)", "incremental_sdk_s", "{:.2f}"),
        ("  / full time (target <= 0.2)", "incremental_sdk_time_ratio", "{:.3f}"),
        ("  bytes read (MiB)", "incremental_sdk_read_bytes", "MiB"),
        ("  bytes uploaded / bytes changed", "upload_amplification_sdk", "{:.3f}"),
        ("restore, verified (s)", "restore_s", "{:.2f}"),
        ("raw copy back / obstore.get (s)", "raw_download_s", "{:.2f}"),
        ("restore throughput ratio (target >= 0.8)", "restore_throughput_ratio", "{:.2f}"),
        ("notice -> durable snapshot, 10% changed, SDK (s)", "notice_to_durable_s", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        table.add_row(label, *(f"{r[key] / MiB:.0f}" if fmt == "MiB" else fmt.format(r[key]) for r in results))
    console = Console()
    console.print(table)
    console.print(
        "hash throughput, 1 MiB chunks (GB/s): " + ", ".join(f"{k} {v:.2f}" for k, v in hashes.items())
    )
    console.print(
        f"saving one shard: torch.save {writer['plain_save_s']:.3f} s, through spotrun.atomic_write "
        f"{writer['sdk_save_s']:.3f} s (fsync + write hints)"
    )
    console.print(
        "upload amplification by chunk size: " + ", ".join(f"{k} {v:.3f}" for k, v in overhead.items())
    )


if __name__ == "__main__":
    main()
