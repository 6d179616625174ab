"""A tiny HTTP/1.1 server that answers whatever a test tells it to, including nonsense.

The emulators are well-behaved; this one is not: garbage bodies, truncated answers, 5xx,
never answering at all, or answering a byte at a time forever, to prove a watcher survives them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

TRICKLE = b"TRICKLE"  # answer: a 200 that promises a large body and sends one byte every 0.2 s
TRICKLE_GAP_S = 0.2  # well inside any per-read timeout, so only an overall deadline ends it

# (method, path with query) -> raw bytes to send, TRICKLE, or None to hang without answering
Responder = Callable[[str, str], bytes | None]


def http(status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


class RawServer:
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, socket_path: str | None = None) -> str:
        if socket_path:
            self._server = await asyncio.start_unix_server(self._handle, socket_path)
            return f"unix://{socket_path}"
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                sizes = [int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:")]
                length = sizes[0] if sizes else 0
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                answer = self.responder(method, target)
                if answer is None:
                    await asyncio.Event().wait()  # hang until the server is closed
                if answer == TRICKLE:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                    while True:
                        writer.write(b" ")
                        await writer.drain()
                        await asyncio.sleep(TRICKLE_GAP_S)
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
