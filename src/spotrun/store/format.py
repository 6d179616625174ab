"""The repository format (docs/store-format.md is the prose version of this module).

<prefix>/config.json                                   format version, chunk size, hash
<prefix>/packs/<hh>/<pack id>                          chunk bytes, a few chunks per object
<prefix>/jobs/<job>/snapshots/a<attempt>-s<seq>.json    manifests, published last
<prefix>/jobs/<job>/pins/a<attempt>-s<seq>              pinned snapshots (empty objects)
<prefix>/jobs/<job>/outputs/attempt-<n>/<path>          job outputs, write-once
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from spotrun.store.errors import HostileManifest, StoreError, StoreFormatError

FORMAT_NAME = "spotrun-store"
FORMAT_VERSION = 2
HASH_NAME = "blake3"
FINGERPRINT_NAME = "xxh3-128"
DEFAULT_CHUNK_SIZE = 512 * 1024  # docs/store-format.md: measured against 0.5-8 MiB
MAX_PACK_CHUNKS = 64  # what a reader accepts; writers pack up to pipeline.SEGMENT_CHUNKS (16)
# Bounds a reader checks before trusting a manifest (docs/store-format.md, "Manifest"): far above
# any real checkpoint, low enough that no value can exhaust memory or overflow a system call.
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 4 * 1024, 16 * 1024 * 1024  # a restore buffers 16 chunks per segment
MAX_MANIFEST_BYTES = 1 << 30
MAX_FILES = 1_000_000
MAX_FILE_SIZE = 1 << 50  # 1 PiB
MAX_PATH = 4096
MAX_ATTEMPT = MAX_SEQUENCE = 2**31 - 1
CONFIG_KEY = "config.json"

_JOB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SNAP_RE = re.compile(r"^a(\d{6,})-s(\d{8,})$")
_SNAP_ARG_RE = re.compile(r"^a?(\d+)[-.]s?(\d+)$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{32}$")


def chunk_hash(data: bytes | memoryview) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


def fingerprint(data: bytes | memoryview) -> str:
    """A change detector, ~5x cheaper than `chunk_hash`: a snapshot re-hashes a chunk with BLAKE3
    only when its fingerprint differs from the one the job's previous snapshot recorded at the
    same place (docs/store-format.md, "Fingerprints"). Never names or verifies stored bytes."""
    import xxhash

    return xxhash.xxh3_128_hexdigest(data)


def pack_id(digests: list[str]) -> str:
    """Names a pack by the chunks in it, in order: the same chunks packed alike share one key."""
    import blake3

    return blake3.blake3(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()


def pack_key(pack: str) -> str:
    return f"packs/{pack[:2]}/{pack}"


Location = tuple[str, int]  # (pack id, slot): the chunk's bytes start at slot * chunk_size
Run = tuple[str, int, int]  # (pack id, first slot, count): consecutive chunks of a file


def runs_of(locations: list[Location]) -> list[Run]:
    """Merge a file's chunk locations into runs: one ranged read per run on restore."""
    runs: list[Run] = []
    for pack, slot in locations:
        if runs and runs[-1][0] == pack and runs[-1][1] + runs[-1][2] == slot:
            runs[-1] = (pack, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((pack, slot, 1))
    return runs


def check_job_id(job_id: str) -> str:
    if not _JOB_RE.match(job_id):
        raise StoreError(
            f"invalid job id {job_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return job_id


def job_prefix(job_id: str) -> str:
    return f"jobs/{check_job_id(job_id)}"


def snapshot_name(attempt: int, sequence: int) -> str:
    """Zero-padded so that names sort in (attempt, sequence) order, the fencing order."""
    return f"a{attempt:06d}-s{sequence:08d}"


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    m = _SNAP_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_snapshot_arg(text: str) -> tuple[int, int]:
    """What a user may type for a snapshot: `a2-s5`, `2.5`, or the full stored name."""
    m = _SNAP_ARG_RE.match(text.strip())
    if not m:
        raise StoreError(f"not a snapshot id: {text!r} (use the ID column of `spotrun ckpt ls`, e.g. a2-s5)")
    return int(m.group(1)), int(m.group(2))


def snapshot_id(attempt: int, sequence: int) -> str:
    return f"a{attempt}-s{sequence}"


def check_config(raw: bytes, url: str) -> dict[str, Any]:
    try:
        config = json.loads(raw)
        name, version = config["format"], int(config["version"])
    except (ValueError, KeyError, TypeError):
        raise StoreFormatError(
            f"{url}/{CONFIG_KEY} is not a spotrun store config; is this the right URL?"
        ) from None
    if name != FORMAT_NAME or version != FORMAT_VERSION:
        what = (
            "Upgrade spotrun (pip install -U spotrun) to read it."
            if name != FORMAT_NAME or version > FORMAT_VERSION
            else "An older spotrun wrote it: restore from it with that version, and give this "
            "one a new store URL."
        )
        raise StoreFormatError(
            f"{url} uses store format {name} v{version}; this spotrun reads {FORMAT_NAME} "
            f"v{FORMAT_VERSION}. {what}"
        )
    if config.get("hash") != HASH_NAME:
        raise StoreFormatError(f"{url}/{CONFIG_KEY} names hash {config.get('hash')!r}; expected {HASH_NAME}")
    size = config.get("chunk_size")
    if type(size) is not int or not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
        raise StoreFormatError(
            f"{url}/{CONFIG_KEY} has chunk_size = {size!r}; expected {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes"
        )
    return config


def check_chunk_size(size: int) -> int:
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
        raise StoreError(f"chunk size {size} is out of range: use {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
    return size


def new_config(chunk_size: int) -> bytes:
    return json.dumps(
        {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "hash": HASH_NAME,
            "chunk_size": chunk_size,
            "created_at": datetime.now(UTC).isoformat(),
        },
        indent=1,
    ).encode()


def safe_relpath(path: Any) -> PurePosixPath:
    """A relative path that stays inside the target directory, or HostileManifest."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise HostileManifest(f"refusing manifest entry with path {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or any(part in ("..", ".", "") for part in path.split("/")):
        raise HostileManifest(f"refusing manifest entry {path!r}: it would escape the target directory")
    return p


@dataclass
class FileEntry:
    path: str
    size: int
    mode: int
    mtime_ns: int
    chunks: list[str]
    packs: list[Run]  # where the chunks are, in order
    fingerprints: list[str] = field(default_factory=list)  # one per chunk, or none

    def locations(self) -> list[Location]:
        return [(pack, first + i) for pack, first, count in self.packs for i in range(count)]

    def chunk_length(self, index: int, chunk_size: int) -> int:
        return min(chunk_size, self.size - index * chunk_size)

    def matches(self, st) -> bool:
        """Unchanged since it was snapshotted (restore sets mtime, so a restored file matches too)."""
        return (
            self.size == st.st_size
            and self.mtime_ns == st.st_mtime_ns
            and self.mode == stat.S_IMODE(st.st_mode)
        )


@dataclass
class Manifest:
    job_id: str
    attempt: int
    sequence: int
    created_at: str
    chunk_size: int
    files: list[FileEntry]
    host: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return snapshot_name(self.attempt, self.sequence)

    @property
    def id(self) -> str:
        return snapshot_id(self.attempt, self.sequence)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def locations(self) -> dict[str, Location]:
        """Where each chunk this snapshot names is stored (a writer reuses them)."""
        return {c: loc for f in self.files for c, loc in zip(f.chunks, f.locations(), strict=True)}

    def pack_set(self) -> set[str]:
        return {run[0] for f in self.files for run in f.packs}

    def to_json(self) -> bytes:
        data = asdict(self)
        data["type"] = "snapshot"
        data["total_size"] = self.total_size
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        """Parse and validate: every check a hostile, torn or foreign manifest could fail is here,
        with bounds on every size, count and number, so nothing later divides by zero, overflows
        or allocates without limit. A rejection names the field and the reason in one line."""
        try:
            return cls._parse(raw)
        except _Invalid as exc:
            raise HostileManifest(f"{where} is not a valid manifest: {exc}") from None

    @classmethod
    def _parse(cls, raw: bytes) -> Manifest:
        if len(raw) > MAX_MANIFEST_BYTES:
            raise _Invalid(f"it is {len(raw)} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may be")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _Invalid(f"it is not JSON ({type(exc).__name__})") from None
        except RecursionError:
            raise _Invalid("it is nested too deeply to be a manifest") from None
        if not isinstance(data, dict):
            raise _Invalid(f"it is a JSON {type(data).__name__}, not an object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise _Invalid(
                f"format_version = {_show(version)}; this spotrun reads v{FORMAT_VERSION} "
                "(a newer spotrun wrote it? upgrade spotrun)"
            )
        chunk_size = _int(data, "chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
        files = _list(data, "files", MAX_FILES)
        extra = data.get("extra") or {}
        if not isinstance(extra, dict):
            raise _Invalid(f"extra = {_show(extra)} is not an object")
        manifest = cls(
            job_id=_text(data, "job_id", 128),
            attempt=_int(data, "attempt", 0, MAX_ATTEMPT),
            sequence=_int(data, "sequence", 0, MAX_SEQUENCE),
            created_at=_text(data, "created_at", 64),
            chunk_size=chunk_size,
            files=[_entry(f, chunk_size, f"files[{i}]") for i, f in enumerate(files)],
            host=_text(data, "host", 255, default=""),
            extra=extra,
        )
        seen: set[str] = set()
        for f in manifest.files:
            if f.path in seen:
                raise _Invalid(f"it lists {f.path!r} twice")
            seen.add(f.path)
        dirs = {str(parent) for f in manifest.files for parent in PurePosixPath(f.path).parents}
        clash = seen & dirs
        if clash:
            raise _Invalid(f"it uses {sorted(clash)[0]!r} as both a file and a directory")
        return manifest


class _Invalid(Exception):
    """One reason a manifest is refused; `Manifest.from_json` adds which manifest."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _int(data: dict[str, Any], name: str, low: int, high: int, where: str = "") -> int:
    """An integer field within [low, high]: not a float, a string or a bool."""
    value = data.get(name)
    if type(value) is not int or not low <= value <= high:
        raise _Invalid(f"{where}{name} = {_show(value)} is not an integer from {low} to {high}")
    return value


def _text(data: dict[str, Any], name: str, limit: int, where: str = "", default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or len(value) > limit:
        raise _Invalid(f"{where}{name} = {_show(value)} is not a string of at most {limit} characters")
    return value


def _list(data: dict[str, Any], name: str, limit: int, where: str = "", default: list | None = None) -> list:
    value = data.get(name, default)
    if not isinstance(value, list) or len(value) > limit:
        shown = f"a list of {len(value)}" if isinstance(value, list) else _show(value)
        raise _Invalid(f"{where}{name} = {shown} is not a list of at most {limit} items")
    return value


def _entry(data: Any, chunk_size: int, where: str) -> FileEntry:
    if not isinstance(data, dict):
        raise _Invalid(f"{where} = {_show(data)} is not an object")
    if data.get("type", "file") != "file":
        raise _Invalid(
            f"{where}.type = {_show(data.get('type'))} for {_show(data.get('path'))}: "
            "only regular files are restored"
        )
    try:
        path = str(safe_relpath(data.get("path")))
    except HostileManifest as exc:
        raise _Invalid(f"{where}.path: {exc}") from None
    if len(path) > MAX_PATH:
        raise _Invalid(f"{where}.path is {len(path)} characters long, more than {MAX_PATH}")
    where = f"{where} ({path!r}): "
    size = _int(data, "size", 0, MAX_FILE_SIZE, where)
    mode = _int(data, "mode", 0, 0o7777, where)
    mtime_ns = _int(data, "mtime_ns", -(1 << 63), (1 << 63) - 1, where)
    chunks = _list(data, "chunks", MAX_FILE_SIZE // chunk_size + 1, where)
    if not all(isinstance(c, str) and _HASH_RE.match(c) for c in chunks):
        raise _Invalid(f"{where}chunks: a chunk name is not 64 hex digits")
    if len(chunks) != -(-size // chunk_size):
        raise _Invalid(f"{where}size {size} cannot be {len(chunks)} chunks of {chunk_size} bytes")
    runs = [_run(r, where) for r in _list(data, "packs", len(chunks), where)]
    if sum(count for _, _, count in runs) != len(chunks):
        raise _Invalid(f"{where}packs: its runs do not hold exactly its {len(chunks)} chunks")
    fingerprints = _list(data, "fingerprints", len(chunks), where, default=[])
    if fingerprints and (
        len(fingerprints) != len(chunks)
        or not all(isinstance(f, str) and _FINGERPRINT_RE.match(f) for f in fingerprints)
    ):
        raise _Invalid(f"{where}fingerprints: not one 32-hex-digit fingerprint per chunk")
    return FileEntry(path, size, mode & 0o777, mtime_ns, chunks, runs, fingerprints)


def _run(data: Any, where: str) -> Run:
    if not (
        isinstance(data, list)
        and len(data) == 3
        and isinstance(data[0], str)
        and _HASH_RE.match(data[0])
        and type(data[1]) is int
        and type(data[2]) is int
        and data[1] >= 0
        and data[2] >= 1
        and data[1] + data[2] <= MAX_PACK_CHUNKS
    ):
        raise _Invalid(
            f"{where}packs: bad pack run {_show(data)} (want [64 hex digits, slot >= 0, count >= 1], "
            f"slot + count <= {MAX_PACK_CHUNKS})"
        )
    return data[0], data[1], data[2]
