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
    if config.get("hash") != HASH_NAME or int(config.get("chunk_size", 0)) <= 0:
        raise StoreFormatError(f"{url}/{CONFIG_KEY} names hash {config.get('hash')!r}; expected {HASH_NAME}")
    return config


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
        """Parse and validate: every check a hostile or torn manifest could fail is here."""
        try:
            data = json.loads(raw)
            if int(data.get("format_version", 0)) != FORMAT_VERSION:
                raise StoreFormatError(
                    f"{where} has manifest format v{data.get('format_version')}; this spotrun reads "
                    f"v{FORMAT_VERSION}. Upgrade spotrun."
                )
            chunk_size = int(data["chunk_size"])
            files = [_entry(f, chunk_size) for f in data["files"]]
            manifest = cls(
                job_id=str(data["job_id"]),
                attempt=int(data["attempt"]),
                sequence=int(data["sequence"]),
                created_at=str(data["created_at"]),
                chunk_size=chunk_size,
                files=files,
                host=str(data.get("host", "")),
                extra=dict(data.get("extra") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HostileManifest(f"{where} is not a valid manifest ({exc})") from None
        seen: set[str] = set()
        for f in files:
            if f.path in seen:
                raise HostileManifest(f"{where} lists {f.path!r} twice")
            seen.add(f.path)
        dirs = {str(parent) for f in files for parent in PurePosixPath(f.path).parents}
        clash = seen & dirs
        if clash:
            raise HostileManifest(f"{where} uses {sorted(clash)[0]!r} as both a file and a directory")
        return manifest


def _entry(data: dict[str, Any], chunk_size: int) -> FileEntry:
    if data.get("type", "file") != "file":
        raise HostileManifest(
            f"refusing manifest entry {data.get('path')!r} of type {data.get('type')!r}: only regular files are restored"
        )
    path = str(safe_relpath(data["path"]))
    size, chunks = int(data["size"]), list(data["chunks"])
    fingerprints = list(data.get("fingerprints") or [])
    runs = [_run(r, path) for r in data["packs"]]
    if size < 0 or not all(isinstance(c, str) and _HASH_RE.match(c) for c in chunks):
        raise HostileManifest(f"refusing manifest entry {path!r}: bad size or chunk hash")
    if sum(count for _, _, count in runs) != len(chunks):
        raise HostileManifest(f"refusing manifest entry {path!r}: its packs do not hold its {len(chunks)} chunks")
    if fingerprints and (
        len(fingerprints) != len(chunks)
        or not all(isinstance(f, str) and _FINGERPRINT_RE.match(f) for f in fingerprints)
    ):
        raise HostileManifest(f"refusing manifest entry {path!r}: bad chunk fingerprints")
    if len(chunks) != -(-size // chunk_size):
        raise HostileManifest(
            f"refusing manifest entry {path!r}: {size} bytes cannot be {len(chunks)} chunks of {chunk_size}"
        )
    return FileEntry(path, size, int(data["mode"]) & 0o777, int(data["mtime_ns"]), chunks, runs, fingerprints)


def _run(data: Any, path: str) -> Run:
    pack, first, count = data
    if not (
        isinstance(pack, str)
        and _HASH_RE.match(pack)
        and type(first) is int
        and type(count) is int
        and first >= 0
        and count >= 1
        and first + count <= MAX_PACK_CHUNKS
    ):
        raise HostileManifest(f"refusing manifest entry {path!r}: bad pack run {data!r}")
    return pack, first, count
