"""The only module that talks to obstore: put, get, download, head, list, prefixes, delete.

Keeping the storage interface this small (restic's backend idea) lets every store feature be
tested against `file://` and an S3 server through the same code a user's bucket takes, and
keeps obstore's exceptions from leaking: callers see `StoreUnavailable` with the URL in it,
its credentials redacted (`spotrun.redact`). Every trip to a store thread has an overall
deadline, whatever the store does (answers slowly, never answers, trickles bytes).
`file://` writes and pack reads take a direct path of plain `os` calls (`put`, `put_parts`,
`read_blocking(into=)`): the bulk of a snapshot or restore, with no per-chunk allocation, the
same write-to-temp-then-rename atomicity as obstore's LocalStore, and private permissions
(directories 0700, files 0600): checkpoints are the user's data.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from spotrun.redact import redact_text, redact_url, url_secrets
from spotrun.store.errors import StoreError, StoreUnavailable
from spotrun.store.pipeline import pread_into, pwrite_all

if TYPE_CHECKING:
    import ctypes

    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

SCHEMES = ("file", "s3", "gs", "az")
T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


def normalize_url(url: str) -> str:
    """Accept a plain directory path as a `file://` URL, so `spotrun ckpt ls ./store` works."""
    if "://" not in url:
        return Path(url).expanduser().resolve().as_uri()
    return url


def _hint(scheme: str) -> str:
    return {
        "s3": "check the bucket name, AWS credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE / instance "
        "role), AWS_DEFAULT_REGION and, for S3-compatible stores, ?endpoint=URL or AWS_ENDPOINT_URL",
        "gs": "check the bucket name and Google credentials (GOOGLE_APPLICATION_CREDENTIALS or "
        "the VM's service account)",
        "az": "check the container and Azure credentials (AZURE_STORAGE_ACCOUNT_NAME / _KEY or a "
        "managed identity)",
        "file": "check that the directory exists and is writable",
    }[scheme]


class Backend:
    """One object store at one URL; keys are relative to the URL's path.

    `url` is the redacted form, for messages; the credentials stay inside the obstore client.
    """

    def __init__(
        self, url: str, *, create: bool = False, retry_timeout_s: float | None = None, max_retries: int = 100
    ):
        from obstore.store import from_url

        from spotrun.durations import parse_duration

        if retry_timeout_s is None:  # how long to keep retrying an unreachable store
            try:
                retry_timeout_s = parse_duration(os.environ.get("SPOTRUN_STORE_RETRY_TIMEOUT", "60s"))
            except ValueError as exc:
                raise StoreError(f"SPOTRUN_STORE_RETRY_TIMEOUT: {exc}") from None
        # One call gives up after this whatever happens: obstore stops retrying after
        # `retry_timeout_s`, and its last request may take as long again.
        self.call_timeout_s = 2 * retry_timeout_s + 1

        full = normalize_url(url)
        self.url = redact_url(full)
        self._secrets = url_secrets(full)
        parts = urlsplit(full)
        self.scheme = parts.scheme
        if self.scheme not in SCHEMES:
            raise StoreError(
                f"unsupported store URL {self.url!r}: use file:///path, s3://bucket/prefix, "
                "gs://bucket/prefix or az://container/prefix"
            )
        options = dict(parse_qsl(parts.query))
        base = parts._replace(query="").geturl()
        retry = {
            "max_retries": max_retries,
            "retry_timeout": timedelta(seconds=retry_timeout_s),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=5),
                "base": 2,
            },
        }
        kwargs: dict = {}
        self.root: Path | None = None
        self._unsynced: set[str] = set()  # file:// keys written since the last flush
        self._unsynced_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        if self.scheme == "file":
            self.root = Path(unquote(parts.path))
            if not create and not self.root.is_dir():
                raise StoreError(f"no store at {self.url}: the directory {self.root} does not exist")
            try:
                _private_dirs(self.root)  # before obstore would make it at the umask
            except OSError as exc:
                raise StoreError(f"cannot create the store directory {self.root}: {exc.strerror or exc}") from None
            kwargs["mkdir"] = True
        else:
            endpoint = options.pop("endpoint", None) or (
                os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                if self.scheme == "s3"
                else None
            )
            if endpoint:
                kwargs["endpoint"] = endpoint
            kwargs.update(options)  # e.g. ?region=eu-west-1
            client = {
                "timeout": timedelta(seconds=retry_timeout_s),
                "connect_timeout": timedelta(seconds=min(5.0, retry_timeout_s)),
            }
            if endpoint and endpoint.startswith("http://"):
                client["allow_http"] = True
            kwargs["client_options"] = client
            kwargs["retry_config"] = retry
        try:
            self._store = from_url(base, **kwargs)
        except Exception as exc:  # obstore raises several types for a bad URL or config
            raise StoreError(f"cannot open store {self.url}: {self._say(exc)} ({_hint(self.scheme)})") from None

    def _say(self, exc: BaseException) -> str:
        """An error from obstore or the OS as one short line, with no credential in it."""
        return redact_text(_short(exc), self._secrets)

    def _guard(self, what: str, fn: Callable[[], T], missing: T | None = None) -> T | None:
        """One blocking obstore call with errors mapped: `missing` when the key is absent.

        Blocking calls, run on the store's threads: obstore's *_async functions abort the
        interpreter at exit about one run in three (obstore 0.12.1, pyo3 callbacks during
        finalization); its blocking calls release the GIL and never do.
        """
        from obstore.exceptions import AlreadyExistsError

        try:
            return fn()
        except FileNotFoundError:
            return missing
        except AlreadyExistsError:
            raise
        except Exception as exc:
            raise self._failure(what, exc) from None

    def _failure(self, what: str, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"{what} failed on {self.url}: {self._say(exc)} — {_hint(self.scheme)}")

    async def _call(self, what: str, fn: Callable[[], T], *, missing: T | None = None) -> T | None:
        return await self.run(self._guard, what, fn, missing, what=what)

    async def run(self, fn: Callable[..., T], *args, what: str = "a store operation") -> T:
        """Blocking work (read, hash, write, a request) on the store's threads, beside its
        transfers, given up after `call_timeout_s`: the thread is abandoned, not waited for
        (`abandoned_calls`), so a store that never answers cannot hold the caller."""
        future = asyncio.get_running_loop().run_in_executor(_pool(), _counted, fn, *args)
        try:
            return await asyncio.wait_for(future, self.call_timeout_s)
        except TimeoutError:
            raise StoreUnavailable(
                f"{what} on {self.url} got no answer within {self.call_timeout_s:g}s "
                f"(SPOTRUN_STORE_RETRY_TIMEOUT) — {_hint(self.scheme)}"
            ) from None

    async def flush(self) -> None:
        """Make every object written so far durable before a manifest may name it.

        Cloud stores acknowledge a PUT only once it is durable. For file://, every file this
        backend wrote since the last flush, and its directories, are fsync'ed; write-back
        was started as each chunk was written, so this mostly waits for the last few. (A syncfs
        would also flush the user's own dirty files — a just-written checkpoint of gigabytes —
        and every other writer's on that filesystem, inside the notice deadline.)
        """
        if self.root is not None:  # local disk work, however long a big first snapshot takes
            await asyncio.get_running_loop().run_in_executor(_pool(), _counted, self._flush_local)

    def _flush_local(self) -> None:
        assert self.root is not None
        with self._flush_lock:  # a concurrent flush may hold keys we wrote: wait until it is done
            with self._unsynced_lock:
                keys, self._unsynced = self._unsynced, set()
            try:
                _sync_local(self.root, keys)
            except BaseException:
                with self._unsynced_lock:
                    self._unsynced |= keys
                raise

    def _written(self, keys: list[str]) -> None:
        if self.root is not None:
            with self._unsynced_lock:
                self._unsynced.update(keys)

    async def put(self, key: str, data: bytes | memoryview | Path, *, create: bool = False) -> bool:
        """Write `key` whole (a Path is streamed, multipart when large). With `create`, False
        when it already exists: nothing is written (S3 `If-None-Match: *`)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError

        if self.root is not None:
            return await self.run(
                self._write_local, key, data if isinstance(data, Path) else [data], create, what=f"writing {key}"
            )

        def put() -> bool:
            obstore.put(self._store, key, data, mode="create" if create else "overwrite")
            return True

        try:
            written = bool(await self._call(f"writing {key}", put))
        except AlreadyExistsError:
            return False
        self._written([key])
        return written

    async def put_parts(self, key: str, parts: list[Buffer]) -> None:
        """Overwrite one object made of `parts` back to back (a pack's chunks, straight from the
        read buffer: file:// writes them with no copy, clouds get one PUT)."""
        if self.root is None:
            await self.put(key, b"".join(parts))
            return
        await self.run(self._write_local, key, parts, False, what=f"writing {key}")

    def _write_local(self, key: str, data: list[Buffer] | Path, create: bool) -> bool:
        """Temp file (0600, in directories made 0700), start its write-back, then rename over the
        key, or with `create` link it there unless it exists (False then): a reader sees the old
        object or the new one whole, never a torn one. Leftover temp files (a kill -9) are
        ordinary unreferenced objects to GC, unlike obstore's hidden `#` ones."""
        assert self.root is not None
        path = self.root / key
        tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            _private_dirs(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if isinstance(data, Path):
                    with open(data, "rb") as src, open(fd, "wb", closefd=False) as dst:
                        shutil.copyfileobj(src, dst, 8 * 1024 * 1024)
                else:
                    pwrite_all(fd, data, 0)
                _start_writeback(fd)
            finally:
                os.close(fd)
            if not create:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # atomic create-if-absent, as obstore's LocalStore does
                except FileExistsError:
                    return False
                finally:
                    tmp.unlink()
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise self._failure(f"writing {key}", exc) from None
        self._written([key])
        return True

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        data = await self.run(self.read_blocking, key, what=f"reading {key}")
        return None if data is None else bytes(data)

    def read_blocking(
        self, key: str, start: int = 0, length: int | None = None, into: memoryview | None = None
    ) -> Buffer | None:
        """`length` bytes of the object from `start` (default: all of it) without a copy, for
        code already on the store's threads (restore's fetch-verify-write, verify's
        fetch-hash); None when it does not exist. Fewer bytes when the object is shorter.

        file:// reads directly (LocalStore reads ~7x slower than the page cache serves a file),
        into `into` when the bytes fit there (no allocation per read); clouds ignore `into` and
        send one ranged GET.
        """
        import obstore

        if self.root is not None:
            read = functools.partial(_read_local, self.root / key, start, length, into)
            return self._guard(f"reading {key}", read)
        if length is None:
            return self._guard(f"reading {key}", lambda: obstore.get(self._store, key).bytes())
        return self._guard(
            f"reading {key}", lambda: obstore.get_range(self._store, key, start=start, length=length)
        )

    async def download(self, key: str, path: Path) -> bool:
        """Stream an object into a new file at `path` (never whole in memory); False if absent."""
        import obstore

        def download() -> bool:
            result = obstore.get(self._store, key)
            tmp = path.with_name(f".{path.name}.spotrun-download")
            try:
                with open(tmp, "wb") as f:
                    for part in result.stream(min_chunk_size=8 * 1024 * 1024):
                        f.write(part)
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
            return True

        return bool(await self._call(f"downloading {key}", download, missing=False))

    async def head(self, key: str) -> ObjectInfo | None:
        import obstore

        def head() -> ObjectInfo:
            meta = obstore.head(self._store, key)
            return ObjectInfo(meta["path"], meta["size"], meta["last_modified"])

        return await self._call(f"checking {key}", head)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under `prefix` (recursively); an absent prefix is an empty list."""
        import obstore

        def listing() -> list[ObjectInfo]:
            return [
                ObjectInfo(m["path"], m["size"], m["last_modified"])
                for batch in obstore.list(self._store, prefix, chunk_size=1000)
                for m in batch
            ]

        return await self._call(f"listing {prefix}", listing, missing=[]) or []

    async def prefixes(self, prefix: str) -> list[str]:
        """The next path segment under `prefix` ("jobs" -> job ids)."""
        import obstore

        def listing() -> list[str]:
            result = obstore.list_with_delimiter(self._store, prefix)
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in result["common_prefixes"]]

        return await self._call(f"listing {prefix}", listing, missing=[]) or []

    async def delete(self, keys: list[str]) -> None:
        import obstore

        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            await self._call(
                f"deleting {len(batch)} objects", functools.partial(obstore.delete, self._store, batch)
            )


def _private_dirs(path: Path) -> None:
    """Create `path` and its missing parents 0700 (`os.makedirs` leaves parents at the umask)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass


_inflight = 0  # calls running on the store's threads, awaited or abandoned
_inflight_lock = threading.Lock()


def _counted(fn: Callable[..., T], *args) -> T:
    global _inflight
    with _inflight_lock:
        _inflight += 1
    try:
        return fn(*args)
    finally:
        with _inflight_lock:
            _inflight -= 1


def abandoned_calls() -> int:
    """Store calls still running once nothing awaits them (given up at their deadline): a
    process that must exit now leaves them with `os._exit`, as joining them could take minutes."""
    return _inflight


def _read_local(path: Path, start: int, length: int | None, into: memoryview | None) -> Buffer:
    with open(path, "rb", buffering=0) as f:
        available = max(0, os.fstat(f.fileno()).st_size - start)
        want = available if length is None else min(length, available)
        if into is None or want > len(into):
            into = memoryview(bytearray(want))
        return into[: pread_into(f.fileno(), into[:want], start)]


def _sync_local(root: Path, keys: set[str]) -> None:
    """fsync each written file and every directory on the way up to (and holding)
    the store root, so that the renames and any new directories are durable too. On several
    threads: each call mostly waits for its device write, and the device takes them in parallel."""
    dirs: set[Path] = {root.parent}
    paths = [root / key for key in keys]
    for path in paths:
        for parent in path.parents:  # up to the first one already listed (at the latest root.parent)
            if parent in dirs:
                break
            dirs.add(parent)
    pool = _sync_pool()
    list(pool.map(_fsync, paths))
    list(pool.map(_fsync, dirs))


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # deleted since (GC of another process's leftover): nothing to keep
        return
    try:
        os.fsync(fd)  # on a directory: its entries (the renames into it)
    finally:
        os.close(fd)


@functools.cache
def _sync_pool() -> ThreadPoolExecutor:
    """Separate from the store's pool: a flush runs on one of its threads and waits for these."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="spotrun-fsync")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "sync_file_range"):
        return None
    libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return libc


def _start_writeback(fd: int) -> None:
    """Start writing the file to disk now (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`), so
    the flush before publishing overlaps with hashing instead of following it. Only a hint:
    durability comes from `flush`."""
    libc = _libc()
    if libc is not None:
        libc.sync_file_range(fd, 0, 0, 2)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """Shared by every store in the process: enough threads for parallel chunk transfers."""
    return ThreadPoolExecutor(max_workers=32, thread_name_prefix="spotrun-store")


def _short(exc: BaseException) -> str:
    """obstore's message without its multi-line `Debug source: Generic {…}` dump."""
    text = " ".join(re.split(r"\s*Debug source:", str(exc), maxsplit=1)[0].split())
    return text if len(text) < 400 else text[:400] + "…"
