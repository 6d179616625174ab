"""The checkpoint store: open a repository, take snapshots, list them.

Publication protocol (docs/store-format.md): chunks first, each durable before the manifest
that names it is written with a conditional create; readers trust manifests only. Snapshots
order by (attempt, sequence), so a late sync from an old attempt can never become "latest".
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from spotrun.sdk.fingerprints import load as load_write_hint
from spotrun.store.backend import Backend, ObjectInfo
from spotrun.store.errors import Fenced, HostileManifest, NoSnapshot, StoreError
from spotrun.store.format import (
    CONFIG_KEY,
    DEFAULT_CHUNK_SIZE,
    FileEntry,
    Location,
    Manifest,
    check_chunk_size,
    check_config,
    chunk_hash,
    fingerprint,
    job_prefix,
    new_config,
    pack_id,
    pack_key,
    parse_snapshot_arg,
    parse_snapshot_name,
    runs_of,
    snapshot_id,
    snapshot_name,
)
from spotrun.store.pipeline import SEGMENT_CHUNKS, BufferPool, gather_all, pread_into, trips
from spotrun.store.scan import LocalFile, scan

log = logging.getLogger("spotrun.store")

# GC deletes an unreferenced chunk only once it is older than the grace period; a writer
# relies on a chunk it did not upload in this snapshot only if a manifest it builds on names
# it, or it uploaded it itself less than half a grace period ago (docs/store-format.md, GC).
DEFAULT_GRACE_S = 3600.0
Progress = Callable[[int], None]  # called with a number of bytes just transferred


@dataclass(frozen=True)
class SnapshotRef:
    job_id: str
    attempt: int
    sequence: int
    key: str
    last_modified: datetime

    @property
    def id(self) -> str:
        return snapshot_id(self.attempt, self.sequence)

    @property
    def name(self) -> str:
        return snapshot_name(self.attempt, self.sequence)


@dataclass
class SnapshotInfo:
    job_id: str
    attempt: int
    sequence: int
    published: bool  # False: nothing new to publish (see `note`)
    files: int = 0
    total_size: int = 0
    changed_files: int = 0
    uploaded_bytes: int = 0
    uploaded_chunks: int = 0
    reused_chunks: int = 0
    read_bytes: int = 0  # read from changed files (a write hint spares unchanged chunks)
    hashed_bytes: int = 0  # read bytes whose fingerprint had changed, so BLAKE3 named them anew
    skipped: list[str] = field(default_factory=list)  # files that changed while being read
    duration_s: float = 0.0
    note: str = ""

    @property
    def id(self) -> str:
        return snapshot_id(self.attempt, self.sequence)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"id": self.id, **asdict(self)}


class Store:
    """A repository at one URL holding the snapshots of many jobs (chunks shared between them)."""

    def __init__(
        self, backend: Backend, *, concurrency: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ):
        self.backend = backend
        self.url = backend.url
        self.concurrency = concurrency or (16 if backend.scheme == "file" else 32)
        self._new_chunk_size = check_chunk_size(chunk_size)
        self._config: dict | None = None
        # chunk -> (monotonic time this process uploaded it, where)
        self._recent: dict[str, tuple[float, Location]] = {}
        self.buffers = BufferPool(keep=trips(self.concurrency, SEGMENT_CHUNKS))

    @classmethod
    def open(
        cls,
        url: str,
        *,
        create: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        concurrency: int | None = None,
        retry_timeout_s: float | None = None,
    ) -> Store:
        """No I/O yet; `create` lets a missing `file://` directory be created on first write.

        `retry_timeout_s` (default $SPOTRUN_STORE_RETRY_TIMEOUT or 60 s) bounds the retries
        with backoff before an unreachable store is reported.
        """
        backend = Backend(url, create=create, retry_timeout_s=retry_timeout_s)
        return cls(backend, concurrency=concurrency, chunk_size=chunk_size)

    # -- repository config ------------------------------------------------------------------

    async def config(self, *, create: bool = False) -> dict | None:
        """The repository config, checked for a known format version; created on first write."""
        if self._config is None:
            raw = await self.backend.get(CONFIG_KEY)
            if raw is None and create:
                await self.backend.put(CONFIG_KEY, new_config(self._new_chunk_size), create=True)
                raw = await self.backend.get(CONFIG_KEY)  # another writer may have won the race
            if raw is not None:
                self._config = check_config(raw, self.url)
        return self._config

    async def chunk_size(self) -> int:
        config = await self.config(create=True)
        assert config is not None
        return int(config["chunk_size"])

    # -- listing -----------------------------------------------------------------------------

    async def jobs(self) -> list[str]:
        await self.config()
        return sorted(await self.backend.prefixes("jobs"))

    async def snapshots(self, job_id: str) -> list[SnapshotRef]:
        """The job's snapshots, oldest first in (attempt, sequence) order."""
        await self.config()
        prefix = f"{job_prefix(job_id)}/snapshots"
        refs = []
        for obj in await self.backend.list(prefix):
            stem = obj.key.rsplit("/", 1)[-1].removesuffix(".json")
            parsed = parse_snapshot_name(stem) if obj.key.endswith(".json") else None
            if parsed:
                refs.append(SnapshotRef(job_id, parsed[0], parsed[1], obj.key, obj.last_modified))
        return sorted(refs, key=lambda r: (r.attempt, r.sequence))

    async def latest(self, job_id: str) -> SnapshotRef | None:
        refs = await self.snapshots(job_id)
        return refs[-1] if refs else None

    async def find(self, job_id: str, snapshot: str | None = None) -> SnapshotRef:
        """The named snapshot (`a2-s5`), or the latest; NoSnapshot with what exists otherwise."""
        refs = await self.snapshots(job_id)
        if not refs:
            raise NoSnapshot(f"job {job_id!r} has no snapshot in {self.url}")
        if snapshot is None or snapshot == "latest":
            return refs[-1]
        wanted = parse_snapshot_arg(snapshot)
        for ref in refs:
            if (ref.attempt, ref.sequence) == wanted:
                return ref
        raise NoSnapshot(
            f"job {job_id!r} has no snapshot {snapshot!r} in {self.url} (it has {', '.join(r.id for r in refs[-5:])})"
        )

    async def manifest(self, ref: SnapshotRef) -> Manifest:
        raw = await self.backend.get(ref.key)
        if raw is None:
            raise NoSnapshot(f"snapshot {ref.id} of job {ref.job_id!r} was removed from {self.url}")
        manifest = Manifest.from_json(raw, f"{self.url}/{ref.key}")
        if (manifest.job_id, manifest.attempt, manifest.sequence) != (ref.job_id, ref.attempt, ref.sequence):
            raise HostileManifest(f"{self.url}/{ref.key} claims to be {manifest.job_id}/{manifest.id}")
        return manifest

    # -- snapshot ----------------------------------------------------------------------------

    async def snapshot(
        self,
        job_id: str,
        attempt: int,
        src_dir: str | os.PathLike[str],
        *,
        progressive: bool = False,
        exclude: frozenset[str] = frozenset(),
        progress: Progress | None = None,
        rehash: bool = False,
        published: Callable[[SnapshotInfo], None] | None = None,
    ) -> SnapshotInfo:
        """Upload what changed in `src_dir` since the newest snapshot and publish a manifest.

        Files are read newest first. With `progressive`, a manifest is published as soon as the
        newest changed file is durable and again at the end, so a flush cut short by a deadline
        still leaves the most recent checkpoint file in the store. `rehash` trusts nothing from
        the previous snapshot: every file is read and every chunk named by BLAKE3 again.
        `published` is called as each manifest becomes durable (a progressive one too), so a
        caller cut short by a deadline still knows the newest snapshot in the store.
        """
        started = time.monotonic()
        src = Path(src_dir)
        if not src.is_dir():
            raise StoreError(
                f"checkpoint directory {src} does not exist: create it or point --checkpoint-dir at it"
            )
        chunk_size = await self.chunk_size()
        refs = await self.snapshots(job_id)
        self._check_fence(job_id, attempt, refs)
        base = await self._base(refs)
        base_files = {f.path: f for f in base.files} if base else {}
        files = await asyncio.to_thread(scan, src, exclude)
        info = SnapshotInfo(job_id, attempt, 0, published=False, files=len(files))
        if not files:
            info.note = f"{src} is empty: nothing to snapshot yet"
            return info
        unchanged = {
            f.rel: base_files[f.rel]
            for f in files
            if not rehash and f.rel in base_files and base_files[f.rel].matches(f.st)
        }
        changed = sorted((f for f in files if f.rel not in unchanged), key=lambda f: -f.st.st_mtime_ns)
        if base and base.attempt == attempt and not changed and len(unchanged) == len(base_files):
            info.sequence, info.note = base.sequence, "nothing changed since the latest snapshot"
            return info
        info.changed_files = len(changed)
        upload = _Uploader(self, chunk_size, base.locations() if base else {}, info, progress)
        fresh: dict[str, FileEntry] = {}

        def entries() -> list[FileEntry]:
            out = []
            for f in sorted(files, key=lambda f: f.rel):
                entry = fresh.get(f.rel) or unchanged.get(f.rel) or base_files.get(f.rel)
                if entry is not None:
                    out.append(entry)
            return out

        tasks = [
            asyncio.create_task(upload.file(f, None if rehash else base_files.get(f.rel))) for f in changed
        ]
        try:
            for i, (f, task) in enumerate(zip(changed, tasks, strict=True)):
                entry = await task
                if entry is None:
                    info.skipped.append(f.rel)
                    log.info("%s changed while being read; it goes in the next snapshot", f.rel)
                else:
                    fresh[f.rel] = entry
                if progressive and i == 0 and len(changed) > 1 and entry is not None:
                    await self._publish(job_id, attempt, chunk_size, entries(), info, started, published)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # retrieve, never leak, their errors
        final = entries()
        if not final:  # never an empty snapshot: it would supersede a real one, or promise one
            info.note = "every file was still being written: nothing to snapshot yet"
        elif base and base.attempt == attempt and final == base.files:
            info.sequence = base.sequence
            info.note = (
                "every changed file was still being written"
                if info.skipped
                else "nothing changed since the latest snapshot"
            )
        else:
            await self._publish(job_id, attempt, chunk_size, final, info, started, published)
        info.duration_s = time.monotonic() - started
        return info

    async def _base(self, refs: list[SnapshotRef]) -> Manifest | None:
        """The newest manifest, which a snapshot builds on; None (a full snapshot) if unreadable.

        Only the newest one may be built on: retention never deletes it, so the chunks it names
        stay put while we rely on them (docs/store-format.md, GC).
        """
        if not refs:
            return None
        try:
            return await self.manifest(refs[-1])
        except (HostileManifest, NoSnapshot) as exc:
            log.warning("latest snapshot %s is unreadable (%s); taking a full snapshot", refs[-1].id, exc)
            return None

    def _check_fence(self, job_id: str, attempt: int, refs: list[SnapshotRef]) -> None:
        newer = [r for r in refs if r.attempt > attempt]
        if newer:
            raise Fenced(
                f"attempt {attempt} of job {job_id!r} stops publishing: attempt {newer[-1].attempt} "
                f"already published snapshot {newer[-1].id} to {self.url}"
            )

    async def _publish(
        self,
        job_id: str,
        attempt: int,
        chunk_size: int,
        files: list[FileEntry],
        info: SnapshotInfo,
        started: float,
        published: Callable[[SnapshotInfo], None] | None,
    ) -> None:
        if time.monotonic() - started > DEFAULT_GRACE_S / 2:
            raise StoreError("snapshot took longer than half the GC grace period; it will be retried")
        await self.backend.flush()  # every chunk the manifest names is durable before it exists
        for _ in range(8):
            refs = await self.snapshots(job_id)
            self._check_fence(job_id, attempt, refs)
            sequence = max((r.sequence for r in refs if r.attempt == attempt), default=0) + 1
            manifest = Manifest(
                job_id=job_id,
                attempt=attempt,
                sequence=sequence,
                created_at=datetime.now(UTC).isoformat(),
                chunk_size=chunk_size,
                files=files,
                host=socket.gethostname(),
                # what this snapshot cost, for the dashboard and /metrics (readers ignore extra)
                extra={"duration_s": round(time.monotonic() - started, 4), "uploaded_bytes": info.uploaded_bytes},
            )
            key = f"{job_prefix(job_id)}/snapshots/{manifest.name}.json"
            if await self.backend.put(key, manifest.to_json(), create=True):
                await self.backend.flush()
                info.sequence, info.published, info.total_size = sequence, True, manifest.total_size
                info.files = len(files)
                if published:
                    published(info)
                log.info(
                    "published snapshot %s of job %s: %d files, %d bytes uploaded",
                    info.id,
                    job_id,
                    len(files),
                    info.uploaded_bytes,
                )
                return
        raise StoreError(
            f"could not publish a snapshot of job {job_id!r} to {self.url}: too many concurrent writers"
        )

    async def restore(self, job_id: str, dest: str | os.PathLike[str], **options):
        """`spotrun.store.restore.restore` on this store (snapshot=, fallback=, replace=, progress=)."""
        from spotrun.store.restore import restore

        return await restore(self, job_id, dest, **options)

    async def verify(self, job_id: str | None = None, snapshot: str | None = None):
        """`spotrun.store.restore.verify` on this store: re-hash every chunk, name damaged files."""
        from spotrun.store.restore import verify

        return await verify(self, job_id, snapshot)

    # -- small operations --------------------------------------------------------------------

    async def pin(self, job_id: str, snapshot: str, *, unpin: bool = False) -> SnapshotRef:
        ref = await self.find(job_id, snapshot)
        key = f"{job_prefix(job_id)}/pins/{ref.name}"
        if unpin:
            await self.backend.delete([key])
        else:
            await self.backend.put(key, b"", create=False)
        return ref

    async def pins(self, job_id: str) -> set[str]:
        return {o.key.rsplit("/", 1)[-1] for o in await self.backend.list(f"{job_prefix(job_id)}/pins")}

    async def prune(self, job_id: str, keep: int, *, dry_run: bool = False) -> list[SnapshotRef]:
        """Delete manifests beyond the newest `keep` (pinned ones stay); chunks are left to GC."""
        if keep < 1:
            raise StoreError("--keep must be at least 1: the newest snapshot is what a restart restores")
        refs, pinned = await self.snapshots(job_id), await self.pins(job_id)
        doomed = [r for r in refs[:-keep] if r.name not in pinned]
        if not dry_run:
            await self.backend.delete([r.key for r in doomed])
        return doomed

    async def pack_objects(self) -> list[ObjectInfo]:
        return await self.backend.list("packs")

    async def all_manifests(self) -> list[tuple[SnapshotRef, Manifest]]:
        out = []
        for job in await self.jobs():
            for ref in await self.snapshots(job):
                out.append((ref, await self.manifest(ref)))
        return out


class _StaleHint(Exception):
    """A chunk read back does not match the fingerprint the file's write hint recorded."""


class _Uploader:
    """Reads, hashes and uploads the chunks of changed files, a segment of consecutive chunks per
    trip to a store thread, with a bounded number of segments in flight. A segment's new chunks
    go up together as one pack."""

    def __init__(
        self,
        store: Store,
        chunk_size: int,
        known: dict[str, Location],
        info: SnapshotInfo,
        progress: Progress | None,
    ):
        self.store, self.chunk_size, self.known, self.info, self.progress = (
            store,
            chunk_size,
            known,
            info,
            progress,
        )
        self.segment = SEGMENT_CHUNKS * chunk_size
        self.slots = asyncio.Semaphore(trips(store.concurrency, SEGMENT_CHUNKS))
        self.inflight: dict[str, asyncio.Future[Location]] = {}

    def _stored(self, digest: str) -> Location | None:
        """Where a chunk already is, if this snapshot may rely on it (GC rules, module top)."""
        if digest in self.known:
            return self.known[digest]
        uploaded = self.store._recent.get(digest)
        if uploaded is not None and time.monotonic() - uploaded[0] < DEFAULT_GRACE_S / 2:
            return uploaded[1]
        return None

    async def file(self, f: LocalFile, prior: FileEntry | None) -> FileEntry | None:
        """The file's entry, or None when it changed, was replaced or vanished while being read.

        `prior` is the file's entry in the base snapshot: a chunk whose fingerprint matches the
        one recorded there at the same offset keeps its name without BLAKE3, and when the SDK
        left a write hint for this version of the file (spotrun.sdk.fingerprints), such chunks
        are not even read. Each segment opens the file itself and checks it is still the same
        version: no descriptor is shared with a thread that a cancelled snapshot may leave
        running.
        """
        try:
            before = os.stat(f.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        hint = None
        if prior is not None and prior.fingerprints:
            hint = await asyncio.to_thread(load_write_hint, f.path, before, self.chunk_size)
        try:
            segments = await self._segments(f.path, before, prior, hint)
        except _StaleHint:
            log.warning("%s does not match its write hint; reading all of it", f.rel)
            segments = await self._segments(f.path, before, prior, None)
        try:
            after = os.stat(f.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if None in segments or _version(after) != _version(before):
            return None
        named = [chunk for segment in segments for chunk in segment]
        return FileEntry(
            f.rel,
            before.st_size,
            stat.S_IMODE(before.st_mode),
            before.st_mtime_ns,
            [digest for digest, _, _ in named],
            runs_of([where for _, _, where in named]),
            [print_ for _, print_, _ in named],
        )

    async def _segments(
        self, path: Path, before: os.stat_result, prior: FileEntry | None, hint: list[str] | None
    ) -> list[list[tuple[str, str, Location]] | None]:
        size, cs = before.st_size, self.chunk_size
        return await gather_all(
            self._segment(
                path,
                offset,
                min(self.segment, size - offset),
                _version(before),
                _known(prior, size, offset, min(self.segment, size - offset), cs),
                hint[offset // cs : offset // cs + SEGMENT_CHUNKS] if hint else [None] * SEGMENT_CHUNKS,
            )
            for offset in range(0, size, self.segment)
        )

    async def _segment(
        self,
        path: Path,
        offset: int,
        length: int,
        version: tuple,
        known: list[tuple[str, str] | None],
        hinted: list[str | None],
    ) -> list[tuple[str, str, Location]] | None:
        """(name, fingerprint, location) of each chunk of the segment, uploading the new ones."""
        async with self.slots:
            buf = self.store.buffers.take(self.segment)
            result = await self.store.backend.run(
                _read_hash, path, buf, offset, length, version, self.chunk_size, known, hinted,
                what=f"reading {path.name}",
            )
            if result is None:
                self.store.buffers.give(buf)
                return None  # changed or replaced under us: the next round takes it
            named, read = result
            self.info.read_bytes += read
            self.info.hashed_bytes += sum(
                min(self.chunk_size, length - i * self.chunk_size)
                for i, (digest, print_) in enumerate(named)
                if known[i] != (print_, digest)
            )
            where: list[Location | asyncio.Future[Location] | int] = []  # int: a slot of our pack
            new: list[tuple[str, memoryview]] = []  # the chunks of this segment's pack
            slot_of: dict[str, int] = {}
            view = memoryview(buf)
            for i, (digest, _) in enumerate(named):
                stored = self._stored(digest)
                if stored is not None:
                    self.info.reused_chunks += 1
                    where.append(stored)
                elif digest in slot_of:
                    where.append(slot_of[digest])
                elif digest in self.inflight:  # another segment is uploading it right now
                    self.info.reused_chunks += 1
                    where.append(self.inflight[digest])
                else:
                    slot_of[digest] = len(new)
                    self.inflight[digest] = asyncio.get_running_loop().create_future()
                    start = i * self.chunk_size
                    new.append((digest, view[start : min(start + self.chunk_size, length)]))
                    where.append(slot_of[digest])
            pack = pack_id([digest for digest, _ in new]) if new else ""
            try:
                if new:
                    await self.store.backend.put_parts(pack_key(pack), [data for _, data in new])
            except BaseException:
                for digest, _ in new:
                    self.inflight.pop(digest).cancel()  # a waiter for the same chunk fails with this snapshot
                raise  # `buf` is not returned: a store thread may still be reading it
            uploaded = time.monotonic()
            for slot, (digest, data) in enumerate(new):
                self.store._recent[digest] = (uploaded, (pack, slot))
                self.info.uploaded_chunks += 1
                self.info.uploaded_bytes += len(data)
                self.inflight.pop(digest).set_result((pack, slot))
            locations = [
                (pack, w) if isinstance(w, int) else await w if isinstance(w, asyncio.Future) else w
                for w in where
            ]
            self.store.buffers.give(buf)
        if self.progress:
            self.progress(length)
        return [(digest, print_, loc) for (digest, print_), loc in zip(named, locations, strict=True)]


def _known(
    prior: FileEntry | None, size: int, offset: int, length: int, cs: int
) -> list[tuple[str, str] | None]:
    """For each chunk of the segment at `offset`: (fingerprint, name) the base snapshot recorded
    for a chunk of the same extent in a file now `size` bytes long, or None where there is
    nothing to compare with."""
    out: list[tuple[str, str] | None] = []
    for i in range(offset // cs, -(-(offset + length) // cs)):
        same = (
            prior is not None
            and i < len(prior.fingerprints)
            and prior.chunk_length(i, cs) == min(cs, size - i * cs)
        )
        out.append((prior.fingerprints[i], prior.chunks[i]) if same else None)
    return out


def _version(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _read_hash(
    path: Path,
    buf: bytearray,
    offset: int,
    length: int,
    version: tuple,
    chunk_size: int,
    known: list[tuple[str, str] | None],
    hinted: list[str | None],
) -> tuple[list[tuple[str, str]], int] | None:
    """(name, fingerprint) of each chunk of one segment of this version of the file, and the
    bytes read; None if the file is not that version.

    A chunk whose fingerprint equals its `known` one keeps the known name: BLAKE3 runs only on
    chunks that changed. A chunk whose write hint already equals its `known` fingerprint is not
    read at all; the others are read, a run of consecutive chunks per call, into `buf`.
    """
    cs = chunk_size
    skip = [h is not None and k is not None and h == k[0] for h, k in zip(hinted, known, strict=False)]
    view = memoryview(buf)[:length]
    read = 0
    if not all(skip):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if _version(os.fstat(fd)) != version:
                return None
            first = 0
            while first < len(known):
                if skip[first]:
                    first += 1
                    continue
                last = first
                while last < len(known) and not skip[last]:
                    last += 1
                start, end = first * cs, min(last * cs, length)
                if pread_into(fd, view[start:end], offset + start) != end - start:
                    return None
                read += end - start
                first = last
        finally:
            os.close(fd)
    named = []
    for i, was in enumerate(known):
        if skip[i]:
            assert was is not None
            named.append((was[1], was[0]))
            continue
        data = view[i * cs : (i + 1) * cs]
        print_ = fingerprint(data)
        if hinted[i] is not None and hinted[i] != print_:
            raise _StaleHint
        named.append((was[1] if was is not None and was[0] == print_ else chunk_hash(data), print_))
    return named, read
