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


class StoreProxy:
    """A TCP proxy in front of a store server that can go bad the way a store does: `hang`
    (connections stay open, nothing is answered) or `refuse` (connections are cut, new ones
    closed at once). A mode applies to open connections too, as clients pool them."""

    def __init__(self, upstream: str) -> None:
        import socket
        import threading

        self.upstream = upstream.removeprefix("http://").rsplit(":", 1)
        self.mode = "pass"
        self._socks: list = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            self._socks.append(client)
            if self.mode == "hang":
                continue
            upstream = socket.create_connection((self.upstream[0], int(self.upstream[1])))
            self._socks.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                if self.mode == "refuse":
                    src.close()
                    dst.close()
                    return
                if self.mode == "hang":
                    return  # swallow: the sockets stay open, nothing more is answered
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()
        for sock in self._socks:
            sock.close()
