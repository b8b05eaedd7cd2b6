"""Small file and time helpers every stage uses: streamed hashing, atomic writes, UTC time stamps.

They live here, not in ``repo``, so that ``memory``, ``reconcile`` and ``store`` need not depend on the
repository format to write a file safely.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

HASH_CHUNK_BYTES = 1 << 20


def read_chunks(f: BinaryIO, chunk_bytes: int = HASH_CHUNK_BYTES) -> Iterator[bytes]:
    """The one chunked read loop (hashing, copying while hashing): memory stays at one chunk."""
    while True:
        b = f.read(chunk_bytes)
        if not b:
            return
        yield b


def sha256_file(path: Path, chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """Streamed: memory stays at one chunk whatever the file size."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in read_chunks(f, chunk_bytes):
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
