"""Request bodies of the S3 store: the memory budget all transfers share, and a file body that is
hashed as botocore reads it (store/s3.py uses both; neither talks to botocore)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from tritonops.store.base import ProgressFn


class ByteBudget:
    """Bytes held in memory by all transfers together, at most ``limit``: a transfer waits for room
    before it reads its body. One body larger than the whole budget waits until nothing else is
    held, then goes alone."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._held == 0 or self._held + n <= self._limit)
            self._held += n
        try:
            yield
        finally:
            with self._cond:
                self._held -= n
                self._cond.notify_all()


class Mismatch(Exception):
    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


class VerifyingReader:
    """A file body that hashes what botocore reads and holds the last chunk back until the hash is
    known: bytes that differ from ``sha256`` raise :class:`Mismatch` before the request completes,
    so the server never stores them (and ``mismatch`` names their hash). A retry after a network
    error rewinds (``seek(0)``) and hashes afresh; a rewind after a mismatch fails, so botocore does
    not retry what cannot succeed."""

    def __init__(self, f: Any, size: int, sha256: str, progress: ProgressFn | None) -> None:
        self._f, self._size, self._want, self._progress = f, size, sha256, progress
        self._h = hashlib.sha256()
        self._pos = 0
        self._reported = 0  # progress counts each byte once, however often a retry reads it again
        self.mismatch: str | None = None

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {os.SEEK_SET: offset, os.SEEK_CUR: self._pos + offset, os.SEEK_END: self._size + offset}[whence]
        if target != self._pos:
            if target != 0 or self.mismatch is not None:
                raise OSError(f"cannot rewind a hashed upload to {target}")
            self._f.seek(0)
            self._h = hashlib.sha256()
            self._pos = 0
        return self._pos

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        chunk = self._f.read(left if n is None or n < 0 else min(n, left))
        self._h.update(chunk)
        self._pos += len(chunk)
        if left and (len(chunk) == 0 or self._pos == self._size):
            digest = self._h.hexdigest()
            if self._pos != self._size or digest != self._want:
                self.mismatch = digest
                raise Mismatch(digest)  # the last chunk is never sent
        if self._progress and self._pos > self._reported:
            self._progress(self._pos - self._reported)
            self._reported = self._pos
        return chunk
