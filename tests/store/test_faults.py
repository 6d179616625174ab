"""Corruption, hostile manifests, a store that goes away, a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest

from spotrun.store import CorruptSnapshot, HostileManifest, Store, StoreUnavailable, restore, verify
from spotrun.store.format import FileEntry

from .helpers import BUCKET, chunk_place, s3_url, start_moto, tree, write

CHUNK = 64 * 1024
RLIMIT_1MIB = (  # files over 1 MiB fail with EFBIG instead of killing the child with SIGXFSZ
    "import resource, signal\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
)


async def two_snapshots(store_url: str, src: Path) -> Store:
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    write(src / "weights.pt", os.urandom(3 * CHUNK))
    write(src / "notes.txt", "v1")
    await store.snapshot("job-1", 1, src)
    write(src / "weights.pt", os.urandom(3 * CHUNK))
    write(src / "notes.txt", "v2")
    await store.snapshot("job-1", 1, src)
    return store


async def flip_a_byte(store: Store, entry: FileEntry, index: int) -> None:
    key, offset, length = chunk_place(entry, index, CHUNK)
    data = bytearray(await store.backend.get(key))
    data[offset + length // 2] ^= 0x01
    await store.backend.put(key, bytes(data))


async def test_flipped_byte_is_named_refused_and_fallen_back_from(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    store = await two_snapshots(store_url, src)
    latest = await store.manifest(await store.find("job-1"))
    weights = next(f for f in latest.files if f.path == "weights.pt")
    await flip_a_byte(store, weights, 1)

    report = await verify(store, "job-1")
    assert not report.ok
    assert [(b.snapshot, b.path) for b in report.bad] == [("a1-s2", "weights.pt")]
    assert "does not match its hash" in report.bad[0].problem

    out = tmp_path / "out"
    with pytest.raises(CorruptSnapshot, match="weights.pt has a corrupt chunk"):
        await restore(store, "job-1", out)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nothing half-restored

    info = await restore(store, "job-1", out, fallback=True)
    assert info.snapshot == "a1-s1" and info.skipped[0]["snapshot"] == "a1-s2"
    assert (out / "notes.txt").read_text() == "v1"


async def test_missing_chunk_is_named(store_url: str, tmp_path: Path) -> None:
    store = await two_snapshots(store_url, tmp_path / "src")
    latest = await store.manifest(await store.find("job-1"))
    notes = next(f for f in latest.files if f.path == "notes.txt")
    await store.backend.delete([chunk_place(notes, 0, CHUNK)[0]])
    report = await verify(store, "job-1", "a1-s2")
    assert [(b.path, "missing" in b.problem) for b in report.bad] == [("notes.txt", True)]


HOSTILE = {
    "parent escape": {"path": "../evil.txt"},
    "nested escape": {"path": "ok/../../evil.txt"},
    "absolute path": {"path": "/tmp/evil.txt"},
    "symlink entry": {"path": "link", "type": "symlink", "target": "/etc"},
    "size bigger than chunks": {"size": 10 * CHUNK},
    "bad chunk hash": {"chunks": ["../../etc/passwd"]},
    "bad pack name": {"packs": [["../../etc/passwd", 0, 1]]},
    "pack run past a pack's end": {"packs": [["ab" * 32, 63, 5]]},
    "packs missing a chunk": {"packs": []},
    "malformed pack run": {"packs": [["ab" * 32, "0"]]},
    "bad fingerprints": {"fingerprints": ["not hex"]},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_manifest_is_refused_and_writes_nothing(case: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    store = Store.open((tmp_path / "store").as_uri(), create=True, chunk_size=CHUNK)
    write(src / "a.txt", "hello")
    await store.snapshot("job-1", 1, src)
    ref = await store.find("job-1")
    manifest = json.loads(await store.backend.get(ref.key))
    manifest["files"][0].update(HOSTILE[case])
    manifest["sequence"] = 2
    await store.backend.put("jobs/job-1/snapshots/a000001-s00000002.json", json.dumps(manifest).encode())

    work = tmp_path / "work"
    work.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(HostileManifest):
        await restore(store, "job-1", work / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "evil.txt").exists() and not list(work.iterdir())
    info = await restore(store, "job-1", work / "out", fallback=True)  # the honest one before it
    assert info.snapshot == "a1-s1" and tree(work / "out") == {"a.txt": b"hello"}
    report = await verify(store, "job-1")
    assert [b.snapshot for b in report.bad] == ["a1-s2"]
    write(src / "b.txt", "next")  # a writer is not stuck behind the bad manifest
    info = await store.snapshot("job-1", 1, src)
    assert info.id == "a1-s3" and info.changed_files == 2  # a full snapshot: the bad base is not trusted
    await restore(store, "job-1", work / "next")
    assert tree(work / "next") == {"a.txt": b"hello", "b.txt": b"next"}


async def test_duplicate_and_file_dir_clash_are_refused(tmp_path: Path) -> None:
    store = Store.open((tmp_path / "store").as_uri(), create=True, chunk_size=CHUNK)
    write(tmp_path / "src" / "a", "x")
    await store.snapshot("job-1", 1, tmp_path / "src")
    manifest = json.loads(await store.backend.get((await store.find("job-1")).key))
    entry = manifest["files"][0]
    for seq, extra in ((2, dict(entry)), (3, dict(entry, path="a/b"))):
        manifest.update(sequence=seq, files=[entry, extra])
        await store.backend.put(
            f"jobs/job-1/snapshots/a000001-s{seq:08d}.json", json.dumps(manifest).encode()
        )
        with pytest.raises(HostileManifest, match="twice|both a file and a directory"):
            await restore(store, "job-1", tmp_path / "out", snapshot=f"a1-s{seq}")


async def test_s3_server_stopped_mid_upload(s3_env: dict[str, str], tmp_path: Path) -> None:
    """Retries with backoff, then an error naming the URL; the previous snapshot stays intact."""
    server, endpoint = start_moto()
    port = int(endpoint.rsplit(":", 1)[1])
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    url = s3_url(endpoint)
    src = tmp_path / "src"
    write(src / "weights.pt", os.urandom(4 * CHUNK))
    store = Store.open(url, create=True, chunk_size=CHUNK, concurrency=1, retry_timeout_s=3)
    await store.snapshot("job-1", 1, src)
    first = tree(src)
    write(src / "weights.pt", os.urandom(8 * CHUNK))

    stopped = False

    def stop_after_first_chunk(_: int) -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            server.stop()

    try:
        with pytest.raises(StoreUnavailable) as err:
            await store.snapshot("job-1", 1, src, progress=stop_after_first_chunk)
        assert url in str(err.value) and "check the bucket name" in str(err.value)
    finally:
        server, _ = start_moto(port)  # moto keeps its state in-process: the data is still there
    try:
        fresh = Store.open(url)
        latest = await fresh.latest("job-1")
        assert latest is not None and latest.id == "a1-s1"
        await restore(fresh, "job-1", tmp_path / "out")
        assert tree(tmp_path / "out") == first
    finally:
        server.stop()


def test_full_disk_on_restore_is_clear_and_cleans_up(tmp_path: Path) -> None:
    """A 1 MiB tmpfs when we may mount one (root), else a child limited by RLIMIT_FSIZE."""
    store_dir = tmp_path / "store"
    src = tmp_path / "src"
    write(src / "big.bin", os.urandom(3 * 1024 * 1024))
    write(src / "small.txt", "small")
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from spotrun.store import Store, restore
        async def main():
            store = Store.open({store_dir.as_uri()!r}, create=True)
            if sys.argv[1] == "snapshot":
                await store.snapshot("job-1", 1, {str(src)!r})
            else:
                await restore(store, "job-1", sys.argv[2])
        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", code, "snapshot"], check=True, timeout=120)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)], capture_output=True
        ).returncode
        == 0
    )
    limit = "" if mounted else RLIMIT_1MIB
    try:
        result = subprocess.run(
            [sys.executable, "-c", limit + code, "restore", str(tiny / "out")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0
        assert "RestoreError" in result.stderr and "disk full while restoring" in result.stderr
        assert list(tiny.iterdir()) == []  # the partial restore was removed
    finally:
        if mounted:
            subprocess.run(["umount", str(tiny)], check=True)


def _set(path: str, value: object):
    """A change to one field of a manifest (`files.0.mtime_ns`), or the whole text (`raw`)."""

    def change(manifest: dict) -> bytes:
        if path == "raw":
            return value if isinstance(value, bytes) else str(value).encode()
        *parents, leaf = path.split(".")
        node: object = manifest
        for part in parents:
            node = node[int(part) if part.isdigit() else part]  # type: ignore[index]
        node[int(leaf) if leaf.isdigit() else leaf] = value  # type: ignore[index]
        return json.dumps(manifest).encode()

    return change


INVALID = {  # what a torture run found crashing restore, and its neighbours: (change, named in the error)
    "chunk size 0": (_set("chunk_size", 0), "chunk_size"),
    "mtime 1e30": (_set("files.0.mtime_ns", 1e30), "mtime_ns"),
    "mtime past int64": (_set("files.0.mtime_ns", 1 << 64), "mtime_ns"),
    "size past a petabyte": (_set("files.0.size", 1 << 60), "size"),
    "negative mode": (_set("files.0.mode", -1), "mode"),
    "attempt as text": (_set("attempt", "1"), "attempt"),
    "files not a list": (_set("files", {"a.txt": 1}), "files"),
    "entry not an object": (_set("files.0", "a.txt"), "files[0]"),
    "a newer format": (_set("format_version", 3), "format_version"),
    "not json": (_set("raw", b"\xff\xfe{not json"), "not JSON"),
    "5000-deep nesting": (_set("raw", "[" * 5000 + "]" * 5000), "nested too deeply"),
    "a list, not an object": (_set("raw", "[1, 2]"), "JSON list"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_an_invalid_manifest_is_one_line_naming_the_field_and_fallen_back_past(
    case: str, tmp_path: Path
) -> None:
    change, field = INVALID[case]
    store = Store.open((tmp_path / "store").as_uri(), create=True, chunk_size=CHUNK)
    write(tmp_path / "src" / "a.txt", "hello")
    await store.snapshot("job-1", 1, tmp_path / "src")
    manifest = json.loads(await store.backend.get((await store.find("job-1")).key))
    manifest["sequence"] = 2
    await store.backend.put("jobs/job-1/snapshots/a000001-s00000002.json", change(manifest))

    with pytest.raises(HostileManifest) as err:
        await restore(store, "job-1", tmp_path / "out")
    message = str(err.value)
    assert field in message and "a000001-s00000002.json" in message and "\n" not in message
    assert not (tmp_path / "out").exists()
    info = await restore(store, "job-1", tmp_path / "out", fallback=True)
    assert info.snapshot == "a1-s1" and tree(tmp_path / "out") == {"a.txt": b"hello"}
    assert [b.snapshot for b in (await verify(store, "job-1")).bad] == ["a1-s2"]
    assert (await store.snapshot("job-1", 1, tmp_path / "src")).id == "a1-s3"  # a full one, not stuck
