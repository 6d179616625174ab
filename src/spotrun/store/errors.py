"""Store errors: each message names the store URL or the file, and what to do about it."""

from __future__ import annotations


class StoreError(Exception):
    """Anything the user must act on; the CLI prints it without a traceback."""


class StoreUnavailable(StoreError):
    """The object store could not be reached or refused us, after retries with backoff."""


class StoreFormatError(StoreError):
    """The store was written by a spotrun whose format this one does not know."""


class NoSnapshot(StoreError):
    """The job has no (matching) snapshot yet."""


class CorruptSnapshot(StoreError):
    """A chunk is missing or its bytes do not match its hash."""


class HostileManifest(StoreError):
    """A manifest that would write outside the target, or that contradicts itself."""


class Fenced(StoreError):
    """A newer attempt has published: this (older) attempt must stop publishing."""


class RestoreError(StoreError):
    """The restore could not be completed (disk full, target not empty, ...)."""
