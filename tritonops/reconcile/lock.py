"""One reconcile per region per host: an fcntl lock file in the state dir.

Held -> ``LockHeldError`` (exit code 3), so a cron run that overlaps the previous one exits
quickly and visibly instead of acting twice. The kernel releases the lock if the process dies.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tritonops.errors import LockHeldError


@contextmanager
def region_lock(path: Path, region: str) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeldError(f"region {region!r}: another reconcile holds {path} (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
