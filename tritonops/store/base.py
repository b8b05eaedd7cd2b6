"""The object-store boundary: a small Protocol the sync engine takes, with S3 and file:// behind it.

Keys are relative to the region's prefix and always '/'-separated; a store never lets a key leave
its prefix (``..``, absolute keys and empty segments are refused before any request is made).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tritonops.errors import StoreError

# Called with a byte count as data goes out, so a progress bar can show throughput.
ProgressFn = Callable[[int], None]

# Files in flight during a sync (`sync --workers`). Measured at 50 ms round trips, 12,001 small
# objects: 16 took 48.3 s, 32 took 37.9 s, 64 took 39.8 s (the server was then the bound); on
# loopback 16 and 32 were level. Memory is bounded apart from this (store/s3.py, BODY_BUDGET_BYTES).
DEFAULT_WORKERS = 32


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix
    size: int
    # The sha256 recorded when tritonops wrote the object (S3 metadata ``x-amz-meta-sha256``);
    # None when unknown (a LIST does not return metadata, or a foreign object).
    sha256: str | None = None
    # What a LIST says about the object's identity (S3: ETag and Last-Modified; a file: its mtime):
    # a change of either means the object was rewritten. None when the store cannot tell.
    etag: str | None = None
    modified: float | None = None  # seconds since the epoch


def check_key(key: str, where: str = "") -> str:
    """Refuse keys that would escape the prefix. Returns the key unchanged."""
    bad = (
        not key
        or key.startswith("/")
        or "\\" in key
        or any(part in ("", ".", "..") for part in key.split("/"))
    )
    if bad:
        src = f"{where}: " if where else ""
        raise StoreError(
            f"{src}key {key!r} is outside the repository prefix (absolute, '..' or empty segment)"
        )
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """Every read and write of a bucket goes through this. Implementations: :class:`S3Store`, :class:`FileStore`."""

    @property
    def url(self) -> str:
        """Where the store points (``s3://bucket/prefix`` or ``file:///path``), for messages."""
        ...

    def create(self) -> None:
        """Create the bucket (or folder) if it does not exist; the local stack uses it for its buckets."""
        ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist. A missing bucket (or folder), denied access
        or an unreachable endpoint raise StoreError with one line: sync's first request is this one."""
        ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def hash_bytes(self, key: str) -> str | None:
        """The sha256 of the object's bytes, read in chunks (memory stays at one chunk, whatever the
        object's size), or None if it does not exist. What `sync --verify` and release checks use."""
        ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (relative), sorted by key."""
        ...

    def put_bytes(self, key: str, data: bytes, sha256: str) -> None: ...

    def put_file(
        self, key: str, path: str, size: int, sha256: str, progress: ProgressFn | None = None
    ) -> str:
        """Upload a file; returns the sha256 of the bytes actually sent (the caller compares it)."""
        ...

    def delete(self, keys: Iterable[str]) -> None: ...

    def close(self) -> None: ...


# -- conditional writes: what a lease in a bucket needs ------------------------------------------


class PreconditionFailed(StoreError):
    """A conditional write or delete lost: the object exists (create-if-absent), or its ETag is no
    longer the one read (replace- or delete-if-match), or it is gone. ``key`` names the object."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class ConditionalWritesUnsupported(StoreError):
    """The store accepts writes but ignores or refuses their conditions (``If-None-Match``, ``If-Match``):
    nothing stored there can be a lease. ``store`` names it (its URL)."""

    def __init__(self, message: str, store: str) -> None:
        super().__init__(message)
        self.store = store


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the ETag they were read with (what a replace-if-match must name)."""

    data: bytes
    etag: str


@runtime_checkable
class ConditionalStore(Protocol):
    """Compare-and-swap on single small objects: S3's conditional writes (``If-None-Match: *`` and
    ``If-Match: <etag>``, on AWS since 2024), and their file:// equivalent. A write that loses raises
    :class:`PreconditionFailed`; none of them ever overwrites a version it did not name."""

    @property
    def url(self) -> str: ...

    def get_versioned(self, key: str) -> Versioned | None:
        """The object and its ETag, or None if it does not exist."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create the object only if no object has the key; returns its ETag."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Replace the object only if its ETag is still ``etag``; returns the new ETag."""
        ...

    def delete_if_match(self, key: str, etag: str) -> None:
        """Delete the object only if its ETag is still ``etag`` (an object already gone is not an error)."""
        ...

    def close(self) -> None: ...
