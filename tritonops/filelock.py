"""The one process lock tritonops takes on a file: an exclusive, non-blocking ``flock``.

Held -> the caller's error at once (a cron run that overlaps the previous one exits quickly and
visibly instead of acting twice). The holder's pid is written in the file, so the error can name it.
The kernel releases the lock when the process dies.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path, held: Callable[[str], Exception]) -> Iterator[Path]:
    """Hold ``path`` (created if missing) for the block; if another process holds it, raise
    ``held(pid)`` with the holder's pid ("unknown" when it did not write one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise held(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
