"""A ``file://`` store: the same layout in a local folder (an NFS mount, a test, Triton's local path).

Conditional writes (what a lease needs) are honest here too: create-if-absent is a hard link of a
finished temporary file (``link`` fails if the name exists, atomically, on every POSIX filesystem),
and replace- or delete-if-match read, compare and rename under an ``flock`` on one lock file in the
folder. The ETag of a file is the sha256 of its bytes. ``flock`` is exclusive between processes of
one host and, on NFSv4, between hosts (Linux maps it onto NFS byte-range locks); on a filesystem
without working locks the lease is only as good as that filesystem.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tritonops.errors import StoreError
from tritonops.fileio import atomic_write_bytes, sha256_file
from tritonops.store.base import ObjectInfo, PreconditionFailed, ProgressFn, Versioned, check_key

T = TypeVar("T")

COPY_CHUNK_BYTES = 1 << 20
# Hidden and named like a temporary file, so list() never shows it.
CAS_LOCK_NAME = ".tritonops.tmp.cas-lock"


class FileStore:
    """Objects are files below ``root``; every write is a temporary file renamed into place."""

    def __init__(self, root: Path, region_name: str = "") -> None:
        self.root = root
        self._where = f"region {region_name}: " if region_name else ""

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key, self.url)

    def create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self._where}{self.url}: cannot create folder: {e.strerror}") from None

    def get(self, key: str) -> bytes | None:
        return self._read(key, Path.read_bytes)

    def hash_bytes(self, key: str) -> str | None:
        return self._read(key, sha256_file)

    def _read(self, key: str, how: Callable[[Path], T]) -> T | None:
        try:
            return how(self._path(key))
        except FileNotFoundError:
            if not self.root.is_dir():
                raise StoreError(f"{self._where}{self.url}: folder does not exist") from None
            return None
        except OSError as e:
            raise StoreError(f"{self._where}{self.url}/{key}: cannot read: {e.strerror}") from None

    def head(self, key: str) -> ObjectInfo | None:
        p = self._path(key)
        if not p.is_file():
            return None
        # No metadata beside a plain file: the hash of the bytes is the truth.
        return ObjectInfo(key, p.stat().st_size, sha256_file(p))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and ".tmp" in name:
                    continue
                p = Path(dirpath) / name
                rel = p.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    st = p.stat()
                    out.append(ObjectInfo(rel, st.st_size, None, None, st.st_mtime_ns / 1e9))
        return sorted(out, key=lambda o: o.key)

    def put_bytes(self, key: str, data: bytes, sha256: str) -> None:
        try:
            atomic_write_bytes(self._path(key), data)
        except OSError as e:
            raise StoreError(f"{self._where}{self.url}/{key}: cannot write: {e.strerror}") from None

    def put_file(
        self, key: str, path: str, size: int, sha256: str, progress: ProgressFn | None = None
    ) -> str:
        dest = self._path(key)
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        h = hashlib.sha256()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(COPY_CHUNK_BYTES):
                    h.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self._where}{self.url}/{key}: cannot write: {e.strerror}") from None
        return h.hexdigest()

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            p = self._path(key)
            p.unlink(missing_ok=True)
            # Drop folders left empty, up to (not including) the root.
            parent = p.parent
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    # -- ConditionalStore ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _cas_lock(self) -> Iterator[None]:
        fd = os.open(self.root / CAS_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _failed(self, op: str, key: str, why: str) -> PreconditionFailed:
        return PreconditionFailed(f"{self._where}{op} {self.url}/{key}: condition failed ({why})", key)

    def get_versioned(self, key: str) -> Versioned | None:
        data = self.get(key)
        return None if data is None else Versioned(data, hashlib.sha256(data).hexdigest())

    def _tmp_with(self, dest: Path, data: bytes) -> Path:
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}.{os.urandom(4).hex()}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return tmp

    def _write_op(self, op: str, key: str, fn: Callable[[], T]) -> T:
        try:
            self.create()
            with self._cas_lock():
                return fn()
        except OSError as e:
            raise StoreError(f"{self._where}{self.url}/{key}: cannot {op}: {e.strerror}") from None

    def put_if_absent(self, key: str, data: bytes) -> str:
        dest = self._path(key)

        def go() -> str:
            tmp = self._tmp_with(dest, data)
            try:
                os.link(tmp, dest)  # atomic: fails if the name exists
            except FileExistsError:
                raise self._failed("create", key, "exists") from None
            finally:
                tmp.unlink(missing_ok=True)
            return hashlib.sha256(data).hexdigest()

        return self._write_op("create", key, go)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        dest = self._path(key)

        def go() -> str:
            now = self.get_versioned(key)
            if now is None or now.etag != etag:
                raise self._failed("replace", key, "gone" if now is None else "changed")
            os.replace(self._tmp_with(dest, data), dest)
            return hashlib.sha256(data).hexdigest()

        return self._write_op("replace", key, go)

    def delete_if_match(self, key: str, etag: str) -> None:
        def go() -> None:
            now = self.get_versioned(key)
            if now is None:
                return
            if now.etag != etag:
                raise self._failed("delete", key, "changed")
            self._path(key).unlink(missing_ok=True)

        self._write_op("delete", key, go)

    def close(self) -> None:
        pass
