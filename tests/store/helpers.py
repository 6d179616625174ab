"""Helpers shared by the store tests (fixtures live in conftest.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

from spotrun.sdk.atomic import is_internal_name
from spotrun.store.format import FileEntry, pack_key

BUCKET = "spotrun-test"


def start_moto(port: int = 0):
    """A moto S3 server on 127.0.0.1; moto keeps its state in-process, so a restart keeps the data."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    return server, f"http://{host}:{bound}"


def s3_url(endpoint: str, prefix: str | None = None) -> str:
    return f"s3://{BUCKET}/{prefix or uuid.uuid4().hex}?endpoint={endpoint}"


def chunk_place(entry: FileEntry, index: int, chunk_size: int) -> tuple[str, int, int]:
    """(object key, offset, length) of one chunk of a manifest entry: where to damage it."""
    pack, slot = entry.locations()[index]
    return pack_key(pack), slot * chunk_size, entry.chunk_length(index, chunk_size)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root, by relative path: what a restore must reproduce (the SDK's
    write hints beside the files are not part of a snapshot)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(is_internal_name(part) for part in p.relative_to(root).parts)
    }
