"""How a snapshot finds what changed in a rewritten file (fingerprints, the SDK's write hints,
--rehash) and how chunks travel in packs — on file:// and moto S3."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from spotrun.sdk.atomic import atomic_write
from spotrun.sdk.fingerprints import sidecar_path
from spotrun.store import Store, du, gc, restore, verify
from spotrun.store.format import DEFAULT_CHUNK_SIZE
from spotrun.store.pipeline import SEGMENT_CHUNKS

from .helpers import tree, write

CHUNK = 64 * 1024
HINTED = DEFAULT_CHUNK_SIZE  # the SDK records its hints at the default chunk size


def rewrite(path: Path, data: bytearray) -> None:
    """The file written anew, as torch.save does: same bytes but the changed ones, new mtime."""
    write(path, bytes(data))


async def test_a_rewritten_file_hashes_only_its_changed_chunks(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = bytearray(os.urandom(6 * CHUNK + 5))
    rewrite(src / "w.pt", data)
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    full = await store.snapshot("job-1", 1, src)
    assert full.read_bytes == full.hashed_bytes == len(data)

    data[3 * CHUNK + 7] ^= 0x01
    rewrite(src / "w.pt", data)
    inc = await store.snapshot("job-1", 1, src)
    assert inc.read_bytes == len(data)  # no write hint: every byte is read...
    assert inc.hashed_bytes == inc.uploaded_bytes == CHUNK  # ...but only the changed chunk hashed

    data += os.urandom(CHUNK)  # grown: the old short last chunk and the new bytes are new
    rewrite(src / "w.pt", data)
    grown = await store.snapshot("job-1", 1, src)
    assert grown.hashed_bytes == CHUNK + 5 and grown.uploaded_chunks == 2

    out = tmp_path / "out"
    await restore(store, "job-1", out)
    assert tree(out) == tree(src)


async def test_rehash_trusts_nothing_and_finds_nothing_new(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "w.pt", os.urandom(3 * CHUNK))
    write(src / "notes.txt", "v1")
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    await store.snapshot("job-1", 1, src)
    again = await store.snapshot("job-1", 1, src, rehash=True)
    assert again.read_bytes == again.hashed_bytes == 3 * CHUNK + 2
    assert not again.published and "nothing changed" in again.note


async def test_sdk_written_files_are_read_only_where_they_changed(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = bytearray(os.urandom(5 * HINTED + 100))
    with atomic_write(src / "w.pt") as f:
        f.write(data)
    store = Store.open(store_url, create=True)
    assert (await store.snapshot("job-1", 1, src)).read_bytes == len(data)  # nothing to compare yet

    data[2 * HINTED + 5] ^= 0x01
    with atomic_write(src / "w.pt") as f:
        f.write(data)
    inc = await store.snapshot("job-1", 1, src)
    assert inc.read_bytes == inc.hashed_bytes == inc.uploaded_bytes == HINTED
    assert sidecar_path(src / "w.pt").is_file()  # the hint stays beside the file, not in the store

    out = tmp_path / "out"
    await restore(store, "job-1", out)
    assert (out / "w.pt").read_bytes() == bytes(data)
    assert not (out / ".spotrun-fingerprints").exists()


async def test_a_hint_that_lies_about_a_chunk_it_read_means_a_full_read(
    tmp_path: Path, caplog
) -> None:
    src = tmp_path / "src"
    data = bytearray(os.urandom(3 * HINTED))
    with atomic_write(src / "w.pt") as f:
        f.write(data)
    store = Store.open((tmp_path / "store").as_uri(), create=True)
    await store.snapshot("job-1", 1, src)
    data[HINTED + 1] ^= 0x01
    with atomic_write(src / "w.pt") as f:
        f.write(data)
    hint = sidecar_path(src / "w.pt")
    recorded = json.loads(hint.read_text())
    recorded["fingerprints"][1] = "0" * 32  # still well-formed, and still "changed", but wrong
    hint.write_text(json.dumps(recorded))

    with caplog.at_level(logging.WARNING, logger="spotrun.store"):
        info = await store.snapshot("job-1", 1, src)
    assert "does not match its write hint" in caplog.text
    assert info.read_bytes >= len(data) and info.uploaded_bytes == HINTED
    out = tmp_path / "out"
    await restore(store, "job-1", out)
    assert (out / "w.pt").read_bytes() == bytes(data)


async def test_chunks_travel_in_packs_and_repeats_are_stored_once(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    chunks = 2 * SEGMENT_CHUNKS + 1  # 4 of them zeros
    write(src / "a.bin", bytes(4 * CHUNK) + os.urandom((chunks - 4) * CHUNK))
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    info = await store.snapshot("job-1", 1, src)
    assert info.uploaded_chunks == chunks - 3 and info.uploaded_bytes == (chunks - 3) * CHUNK
    assert len(await store.pack_objects()) == 3  # one per segment of consecutive chunks
    manifest = await store.manifest(await store.find("job-1"))
    runs = manifest.files[0].packs
    # the zero chunk is slot 0 four times; the fourth run goes on through the random chunks
    assert [run[1:] for run in runs[:4]] == [(0, 1), (0, 1), (0, 1), (0, SEGMENT_CHUNKS - 3)]
    assert len({run[0] for run in runs[:4]}) == 1
    _, total, _ = await du(store)
    assert total == (chunks - 3) * CHUNK

    out = tmp_path / "out"
    await restore(store, "job-1", out)
    assert tree(out) == tree(src)


async def test_a_pack_partly_replaced_stays_while_a_snapshot_uses_it(store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = bytearray(os.urandom(SEGMENT_CHUNKS * CHUNK))
    rewrite(src / "w.pt", data)
    store = Store.open(store_url, create=True, chunk_size=CHUNK)
    await store.snapshot("job-1", 1, src)
    data[5 * CHUNK] ^= 0x01
    rewrite(src / "w.pt", data)
    await store.snapshot("job-1", 1, src)

    report = await gc(store, keep=1, grace_s=0)
    assert report.pruned == ["job-1/a1-s1"] and report.deleted_packs == 0  # its other chunks still used
    assert (await verify(store)).ok
    out = tmp_path / "out"
    await restore(store, "job-1", out)
    assert (out / "w.pt").read_bytes() == bytes(data)
