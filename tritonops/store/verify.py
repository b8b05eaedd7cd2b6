"""Check a published version's objects in a bucket against its manifest, before anything loads or
releases it (invariant 8: what is served is what was published).

The cheap check costs one LIST of the version's folder: every manifest file present with the
manifest's size, no object the manifest does not list (Triton downloads the whole folder), and the
sha256 recorded at upload (``x-amz-meta-sha256``, one HEAD per file) equal to the manifest's. An object
with no recorded sha256 (written by another tool) has its bytes hashed instead. The full check
(``full=True``) downloads and hashes every file.

A positive result can be remembered in a :class:`VerifyCache` keyed by the version's digest and a
fingerprint of the LIST (key, size, ETag, Last-Modified of every object): rewriting an object, even
only its metadata, changes its Last-Modified, so the next check sees a new fingerprint and looks
again. A no-op check of a cached version costs that one LIST. S3 reports Last-Modified to the second,
so a rewrite in the same second as the object's last write would keep the fingerprint: a result is
only cached once every object is older than ``settle_s`` (clocks further apart than that can still
fool the cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonops.fileio import atomic_write_bytes
from tritonops.repo.manifest import FileEntry, ModelManifest
from tritonops.store.base import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

CHECK_WORKERS = 8
CACHE_FORMAT = 1
CACHE_SETTLE_S = 2.0


@dataclass(frozen=True)
class Mismatch:
    """One object of a published version that differs from the manifest."""

    region: str
    model: str
    version: int
    key: str  # relative to the store's prefix
    expected: str
    found: str
    extra: bool = False  # an object the manifest does not list

    def line(self) -> str:
        where = f"region {self.region}: " if self.region else ""
        return (
            f"{where}model {self.model!r} version {self.version}: {self.key}: "
            f"expected {self.expected}, found {self.found}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region, "model": self.model, "version": self.version, "key": self.key,
            "expected": self.expected, "found": self.found, "extra": self.extra,
        }  # fmt: skip


def _short(sha: str | None) -> str:
    return f"sha256 {sha[:12]}..." if sha else "no sha256"


class VerifyCache:
    """Positive checks per (model, version, version digest) with the LIST fingerprint they saw.

    One JSON file per region in the state dir; damage or absence only costs a re-check.
    """

    def __init__(self, path: Path, settle_s: float = CACHE_SETTLE_S) -> None:
        self.path = path
        self.settle_s = settle_s
        self._lock = threading.Lock()  # versions are checked in parallel: writes take turns

    def settled(self, listing: list[ObjectInfo], now: float | None = None) -> bool:
        """Whether a later rewrite of any of these objects is sure to change its Last-Modified."""
        now = time.time() if now is None else now
        return all(o.modified is not None and o.modified < now - self.settle_s for o in listing)

    def _load(self) -> dict[str, Any]:
        try:
            d = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(d, dict) or d.get("format") != CACHE_FORMAT or not isinstance(d.get("checks"), dict):
            return {}
        return dict(d["checks"])

    @staticmethod
    def _key(model: str, version: int, digest: str) -> str:
        return f"{model}|{version}|{digest}"

    def hit(self, model: str, version: int, digest: str, listing: str, full: bool) -> bool:
        e = self._load().get(self._key(model, version, digest))
        return isinstance(e, dict) and e.get("listing") == listing and (bool(e.get("full")) or not full)

    def put(self, model: str, version: int, digest: str, listing: str, full: bool) -> None:
        with self._lock:
            self._put(model, version, digest, listing, full)

    def _put(self, model: str, version: int, digest: str, listing: str, full: bool) -> None:
        checks = self._load()
        k = self._key(model, version, digest)
        was_full = bool(checks.get(k, {}).get("full")) and checks.get(k, {}).get("listing") == listing
        checks[k] = {"listing": listing, "full": full or was_full, "time": round(time.time(), 3)}
        doc = {"format": CACHE_FORMAT, "checks": dict(sorted(checks.items()))}
        atomic_write_bytes(self.path, (json.dumps(doc, indent=1) + "\n").encode())

    def forget(self, model: str, version: int, digest: str) -> None:
        with self._lock:
            checks = self._load()
            if checks.pop(self._key(model, version, digest), None) is not None:
                doc = {"format": CACHE_FORMAT, "checks": checks}
                atomic_write_bytes(self.path, (json.dumps(doc, indent=1) + "\n").encode())


def listing_fingerprint(listing: list[ObjectInfo]) -> str:
    rows = [[o.key, o.size, o.etag or "", repr(o.modified)] for o in sorted(listing, key=lambda o: o.key)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def verify_version(
    store: ObjectStore,
    manifest: ModelManifest,
    version: int,
    *,
    full: bool = False,
    cache: VerifyCache | None = None,
    region: str = "",
) -> list[Mismatch]:
    """The objects of ``manifest``'s ``version`` in ``store`` that differ from the manifest ([] = all good).

    Cheap by default (one LIST, then one HEAD per file unless ``cache`` remembers this exact listing);
    ``full`` downloads and hashes every file. Raises StoreError when the store cannot be read.
    """
    model = manifest.model
    entry = manifest.versions.get(version)
    if entry is None:
        return [Mismatch(region, model, version, f"{model}/{version}/", "a published version", "not in the manifest")]
    folder = f"{model}/{version}/"
    listing = store.list(folder)
    want = {f"{folder}{f.path}": f for f in entry.files}
    seen = {o.key: o for o in listing}

    def mm(key: str, expected: str, found: str, extra: bool = False) -> Mismatch:
        return Mismatch(region, model, version, key, expected, found, extra)

    out = [
        mm(o.key, "no such object (not in the manifest)", f"an extra object of {o.size} bytes", extra=True)
        for o in listing
        if o.key not in want
    ]
    present: list[tuple[str, FileEntry]] = []
    for key, f in sorted(want.items()):
        o = seen.get(key)
        if o is None:
            out.append(mm(key, f"{f.size} bytes, {_short(f.sha256)}", "no object"))
        elif o.size != f.size:
            out.append(mm(key, f"{f.size} bytes, {_short(f.sha256)}", f"{o.size} bytes"))
        else:
            present.append((key, f))
    if out:
        return out
    fingerprint = listing_fingerprint(listing)
    if cache is not None and cache.hit(model, version, entry.digest, fingerprint, full):
        return []
    out = _check_objects(store, present, full, mm)
    if not out and cache is not None and cache.settled(listing):
        cache.put(model, version, entry.digest, fingerprint, full)
    return out


def _check_objects(store: ObjectStore, files: list[tuple[str, FileEntry]], full: bool, mm: Any) -> list[Mismatch]:
    """HEAD each object for its recorded sha256; hash the bytes when ``full`` or when none is recorded."""

    def one(job: tuple[str, FileEntry]) -> Mismatch | None:
        key, f = job
        info = store.head(key)
        if info is None:
            return mm(key, f"{f.size} bytes, {_short(f.sha256)}", "no object")  # deleted since the LIST
        if info.sha256 is not None and info.sha256 != f.sha256:
            return mm(key, f"recorded {_short(f.sha256)}", f"recorded {_short(info.sha256)}")
        if full or info.sha256 is None:
            actual = store.hash_bytes(key)  # streamed: a multi-GB file is never held in memory
            if actual is None:
                return mm(key, f"{f.size} bytes, {_short(f.sha256)}", "no object")
            if actual != f.sha256:
                return mm(key, f"content {_short(f.sha256)}", f"content {_short(actual)}")
        return None

    if len(files) <= 1:
        results = [one(j) for j in files]
    else:
        with ThreadPoolExecutor(min(CHECK_WORKERS, len(files)), thread_name_prefix="verify") as pool:
            results = list(pool.map(one, files))
    return [r for r in results if r is not None]
