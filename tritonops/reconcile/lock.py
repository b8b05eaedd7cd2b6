"""One reconcile per region per host: a lock file in the state dir (:mod:`tritonops.filelock`).

Held -> ``LockHeldError`` (exit code 3), so a cron run that overlaps the previous one exits
quickly and visibly instead of acting twice. The kernel releases the lock if the process dies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tritonops.errors import LockHeldError
from tritonops.filelock import exclusive_lock


@contextmanager
def region_lock(path: Path, region: str) -> Iterator[Path]:
    def held(pid: str) -> LockHeldError:
        return LockHeldError(f"region {region!r}: another reconcile holds {path} (pid {pid})", region=region)

    with exclusive_lock(path, held):
        yield path
