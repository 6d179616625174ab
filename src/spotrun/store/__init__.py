"""Checkpoint store: incremental, verified snapshots on object storage (docs/store-format.md).

store = Store.open("s3://bucket/prefix", create=True)
info = await store.snapshot("job-1", attempt=1, src_dir="ckpt/")
await restore(store, "job-1", "ckpt/", fallback=True)
"""

from spotrun.store.agent_hooks import CheckpointSync, OutputsSync
from spotrun.store.errors import (
    CorruptSnapshot,
    Fenced,
    HostileManifest,
    NoSnapshot,
    RestoreError,
    StoreError,
    StoreFormatError,
    StoreUnavailable,
)
from spotrun.store.gc import du, gc
from spotrun.store.restore import restore, verify
from spotrun.store.store import SnapshotInfo, SnapshotRef, Store

__all__ = [
    "CheckpointSync",
    "OutputsSync",
    "CorruptSnapshot",
    "Fenced",
    "HostileManifest",
    "NoSnapshot",
    "RestoreError",
    "SnapshotInfo",
    "SnapshotRef",
    "Store",
    "StoreError",
    "StoreFormatError",
    "StoreUnavailable",
    "du",
    "gc",
    "restore",
    "verify",
]
