"""A ``file://`` store: the same layout in a local folder (an NFS mount, a test, Triton's local path)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from tritonops.errors import StoreError
from tritonops.fileio import atomic_write_bytes, sha256_file
from tritonops.store.base import ObjectInfo, ProgressFn, check_key

T = TypeVar("T")

COPY_CHUNK_BYTES = 1 << 20


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

    def close(self) -> None:
        pass
