"""Write hints: the SDK fingerprints checkpoint bytes as it writes them and leaves them beside the file."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import spotrun
from spotrun.check.runner import _stray_checkpoints
from spotrun.sdk.atomic import TMP_MARKER, atomic_path, atomic_write, save_atomic
from spotrun.sdk.fingerprints import SIDECAR_DIR, ChunkFingerprints, load, record, sidecar_path
from spotrun.store.format import DEFAULT_CHUNK_SIZE, fingerprint
from spotrun.store.scan import scan

SMALL = 4096


def prints_of(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[str]:
    return [fingerprint(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]


def hint(path: Path) -> list[str] | None:
    return load(path, os.stat(path), DEFAULT_CHUNK_SIZE)


def stream(data: bytes, sizes: list[int], chunk_size: int) -> list[str]:
    prints = ChunkFingerprints(chunk_size)
    pos = 0
    for size in sizes:
        prints.update(data[pos : pos + size])
        pos += size
    prints.update(memoryview(data)[pos:])
    return prints.result()


@pytest.mark.parametrize("seed", range(5))
def test_streaming_equals_one_shot(seed):
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(SMALL * 9))
    edges = [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL + 7]
    sizes = [rng.choice(edges + [rng.randrange(2 * SMALL)]) for _ in range(40)]
    assert stream(data, sizes, SMALL) == prints_of(data, SMALL)


def test_streaming_at_the_default_chunk_size():
    data = random.Random(7).randbytes(3 * DEFAULT_CHUNK_SIZE + DEFAULT_CHUNK_SIZE // 2)
    assert stream(data, [1, DEFAULT_CHUNK_SIZE, 5, 2 * DEFAULT_CHUNK_SIZE], DEFAULT_CHUNK_SIZE) == prints_of(data)
    assert len(prints_of(data)) == 4


def test_empty_and_bytearray_input():
    prints = ChunkFingerprints(SMALL)
    assert prints.result() == []
    prints.update(bytearray(b"abc"))
    prints.update(b"")
    assert prints.result() == [fingerprint(b"abc")]


def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {f"w{i}": torch.randn(200_000 + i, generator=gen) for i in range(4)}  # ~3 MiB


@pytest.mark.parametrize(
    "write",
    [
        lambda f: torch.save(tensors(), f),
        lambda f: pickle.dump({"x": os.urandom(2 * DEFAULT_CHUNK_SIZE + 3)}, f, protocol=5),
        lambda f: np.save(f, np.arange(700_000, dtype=np.float32)),
        lambda f: f.writelines([b"a" * DEFAULT_CHUNK_SIZE, b"b" * 10]),
    ],
    ids=["torch.save", "pickle.dump", "numpy.save", "writelines"],
)
def test_atomic_write_records_the_file_as_written(tmp_path, write):
    target = tmp_path / "ckpt.bin"
    with atomic_write(target) as f:
        write(f)
    assert sidecar_path(target) == tmp_path / SIDECAR_DIR / "ckpt.bin.json"
    assert sidecar_path(target).is_file()
    expected = prints_of(target.read_bytes())
    assert len(expected) >= 2
    assert hint(target) == expected


def test_save_atomic_bytes_and_empty_file(tmp_path):
    save_atomic(tmp_path / "a.bin", b"x" * (DEFAULT_CHUNK_SIZE + 1))
    assert hint(tmp_path / "a.bin") == prints_of(b"x" * (DEFAULT_CHUNK_SIZE + 1))
    save_atomic(tmp_path / "empty.bin", b"")
    assert hint(tmp_path / "empty.bin") == []


def test_torch_load_reads_back_what_was_fingerprinted(tmp_path):
    target = tmp_path / "model.pt"
    state = tensors()
    with atomic_write(target) as f:
        torch.save(state, f)
    loaded = torch.load(target)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert hint(target) == prints_of(target.read_bytes())


@pytest.mark.parametrize("reach", ["seek", "fileno", "truncate"])
def test_reaching_past_write_leaves_no_hint_and_drops_the_stale_one(tmp_path, reach):
    target = tmp_path / "ckpt.bin"
    save_atomic(target, b"old version")
    assert sidecar_path(target).exists()
    with atomic_write(target) as f:
        f.write(b"0123456789")
        if reach == "seek":
            f.seek(2)
            f.write(b"XY")
        elif reach == "fileno":
            os.write(f.fileno(), b"via the descriptor")
        else:
            f.truncate(4)
    assert target.read_bytes() != b"old version"
    assert not sidecar_path(target).exists()
    assert hint(target) is None


def test_harmless_queries_keep_the_hint(tmp_path):
    target = tmp_path / "ckpt.bin"
    with atomic_write(target) as f:
        assert f.writable() and f.seekable() and not f.closed and TMP_MARKER in f.name
        f.write(b"data")
        assert f.tell() == 4
        f.flush()
    assert hint(target) == [fingerprint(b"data")]


def test_text_mode_and_atomic_path_drop_the_stale_hint(tmp_path):
    for i, write in enumerate([lambda p: save_atomic(p, "text"), lambda p: atomic_path(p)]):
        target = tmp_path / f"f{i}"
        save_atomic(target, b"bytes first")
        assert hint(target) == [fingerprint(b"bytes first")]
        if i == 0:
            write(target)
        else:
            with write(target) as tmp:
                tmp.write_bytes(b"written by a library")
        assert not sidecar_path(target).exists()


def rewritten_plainly(path: Path) -> None:
    with open(path, "wb") as f:
        f.write(b"y" * 100)


def touched(path: Path) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def replaced(path: Path) -> None:
    """Same size, same mtime, another inode (a copy restored over it)."""
    st = os.stat(path)
    other = path.with_name("other")
    other.write_bytes(path.read_bytes())
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)


@pytest.mark.parametrize("change", [rewritten_plainly, touched, replaced])
def test_load_rejects_a_hint_for_another_version(tmp_path, change):
    target = tmp_path / "ckpt.bin"
    save_atomic(target, b"x" * 100)
    assert hint(target) is not None
    change(target)
    assert hint(target) is None


def test_load_rejects_another_chunk_size(tmp_path):
    target = tmp_path / "ckpt.bin"
    save_atomic(target, b"x" * 100)
    assert load(target, os.stat(target), DEFAULT_CHUNK_SIZE // 2) is None


def with_json(change):
    def edit(sidecar: Path) -> None:
        data = json.loads(sidecar.read_text())
        change(data)
        sidecar.write_text(json.dumps(data))

    return edit


def symlinked(sidecar: Path) -> None:
    real = sidecar.with_name("real.json")
    sidecar.rename(real)
    sidecar.symlink_to(real)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p.write_bytes(b"\x00garbage{"),
        lambda p: p.write_bytes(p.read_bytes()[:-20]),
        lambda p: p.write_bytes(b"[" * 4000),  # within the size cap: json recurses too deep
        lambda p: p.write_bytes(b" " * 1_000_000),
        lambda p: p.write_bytes(b'"just a string"'),
        with_json(lambda d: d["fingerprints"].append(d["fingerprints"][0])),
        with_json(lambda d: d["fingerprints"].pop()),
        with_json(lambda d: d.__setitem__("fingerprints", ["z" * 32, d["fingerprints"][1]])),
        with_json(lambda d: d.__setitem__("fingerprints", [d["fingerprints"][0].upper(), d["fingerprints"][1]])),
        with_json(lambda d: d.__setitem__("fingerprints", [7, d["fingerprints"][1]])),
        with_json(lambda d: d.__setitem__("fingerprints", "not a list")),
        with_json(lambda d: d.__setitem__("size", str(d["size"]))),
        with_json(lambda d: d.__setitem__("version", True)),
        with_json(lambda d: d.__setitem__("version", 2)),
        with_json(lambda d: d.__setitem__("fingerprint", "xxh64")),
        with_json(lambda d: d.__setitem__("chunk_size", 1)),
        with_json(lambda d: d.pop("ino")),
        symlinked,
    ],
    ids=[
        "garbage", "truncated", "deep-nesting", "huge", "not-an-object", "one-too-many", "one-too-few",
        "non-hex", "upper-case", "wrong-type-entry", "wrong-type-list", "wrong-type-size", "bool-version",
        "version-2", "other-fingerprint", "other-chunk-size", "missing-ino", "symlink",
    ],
)
def test_load_rejects_a_bad_sidecar_without_raising(tmp_path, corrupt):
    target = tmp_path / "ckpt.bin"
    save_atomic(target, os.urandom(DEFAULT_CHUNK_SIZE + 5))
    assert len(hint(target)) == 2
    corrupt(sidecar_path(target))
    assert hint(target) is None


def test_load_without_a_hint_or_with_a_fifo(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"plain")
    assert hint(target) is None
    sidecar_path(target).parent.mkdir()
    os.mkfifo(sidecar_path(target))  # would block a plain open() forever
    assert hint(target) is None


def test_a_hint_that_cannot_be_written_never_fails_the_save(tmp_path):
    (tmp_path / SIDECAR_DIR).write_bytes(b"a regular file where the hint directory goes")
    target = tmp_path / "ckpt.bin"
    path = save_atomic(target, b"the checkpoint")
    assert path == target and target.read_bytes() == b"the checkpoint"
    assert hint(target) is None
    with atomic_write(target) as f:
        f.write(b"again")
    assert target.read_bytes() == b"again"


def test_record_refuses_a_count_that_does_not_fit_the_file(tmp_path):
    target = tmp_path / "ckpt.bin"
    save_atomic(target, b"x" * 10)
    target.write_bytes(b"x" * (DEFAULT_CHUNK_SIZE + 1))  # grew: two chunks, one recorded print
    record(target, [fingerprint(b"x" * 10)])
    assert not sidecar_path(target).exists()


def test_record_skips_a_file_another_writer_replaced(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"ours")
    ours = os.stat(target)
    replaced(target)
    record(target, [fingerprint(b"ours")], written=ours)
    assert not sidecar_path(target).exists()


def test_pruning_deletes_the_hints_of_deleted_checkpoints(tmp_path):
    for step in (1, 2, 3):
        spotrun.save({"step": step, "blob": os.urandom(1000)}, step=step, keep=2, directory=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert files == ["ckpt-000000000002.pkl", "ckpt-000000000003.pkl"]
    assert sorted(p.name for p in (tmp_path / SIDECAR_DIR).iterdir()) == [f"{name}.json" for name in files]
    assert all(hint(tmp_path / name) == prints_of((tmp_path / name).read_bytes()) for name in files)


def test_store_scan_never_lists_hints(tmp_path):
    save_atomic(tmp_path / "ckpt.bin", b"top")
    save_atomic(tmp_path / "sub" / "opt.bin", b"nested")
    assert (tmp_path / "sub" / SIDECAR_DIR / "opt.bin.json").is_file()
    assert sorted(f.rel for f in scan(tmp_path)) == ["ckpt.bin", "sub/opt.bin"]


def test_check_stray_detection_ignores_hints(tmp_path):
    scratch, ckpt_dir = tmp_path / "scratch", tmp_path / "scratch" / "ckpt"
    save_atomic(scratch / "runs" / "ckpt-1.pt", b"a stray checkpoint")
    assert (scratch / "runs" / SIDECAR_DIR / "ckpt-1.pt.json").is_file()
    assert _stray_checkpoints(scratch, set(), ckpt_dir, []) == ["runs/ckpt-1.pt"]
