"""Local drift: which models changed on disk since they were last verified, without re-hashing.

The way git's index does it: after a model's bytes are verified against its manifest, remember a
fingerprint of ``(size, mtime_ns, inode)`` of every file below it and the names of every folder
entry, with the manifest's digest and file count then. Next time one ``lstat`` per entry tells
which models moved; only those are re-validated (and re-hashed). The root's names and files (the
index) are fingerprinted too: when nothing at all moved, the cache vouches for every model and for
the index, and sync reads no manifest (see :mod:`tritonops.store.localrepo`).
A file added or removed, a folder named ``01``, an edited config.pbtxt or a changed byte all change
an entry, so they are caught while the no-op sync stays a walk of ``lstat`` calls.

Limits, as in git: a write that keeps the size and puts back the old mtime on the same inode is
not seen; ``tritonops repo validate`` (or deleting the cache) re-hashes everything.
"Racy" entries (modified within ``RACY_S`` of the walk) are never trusted: a write in the same
clock tick as the hash would otherwise go unseen.

Special files (FIFO, socket, device) are refused here directly: sync publishes regular files only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG

from tritonops.fileio import atomic_write_bytes
from tritonops.repo.manifest import STAGING_PREFIX
from tritonops.repo.rule_finding import Problem

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2
RACY_S = 2.0

# One entry: kind ("f" file, "d" folder, "l" symlink), size, mtime_ns, inode.
Entry = tuple[str, int, int, int]


@dataclass
class Snapshot:
    """What one walk of the repository saw: a fingerprint of each model folder's entries."""

    models: dict[str, str] = field(default_factory=dict)  # model -> fingerprint of its entries
    top: list[str] = field(default_factory=list)  # every name at the root, but staging folders
    top_files: list[tuple[str, Entry]] = field(default_factory=list)  # the root's files (the index)
    special: list[Problem] = field(default_factory=list)
    untrusted: set[str] = field(default_factory=set)  # symlinks or racy entries: always re-validate
    racy_top: bool = False  # a file at the root changed within RACY_S

    def top_fingerprint(self) -> str | None:
        """The root's names and files; None when it cannot be trusted (a racy file)."""
        return None if self.racy_top else _fingerprint((self.top, self.top_files))


def _fingerprint(entries: object) -> str:
    return hashlib.sha1(repr(entries).encode(), usedforsecurity=False).hexdigest()


def _special_kind(mode: int) -> str | None:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):  # fmt: skip
        if test(mode):
            return name
    return None


def _walk_model(path: str, model: str, snap: Snapshot, racy_ns: int) -> None:
    entries: list[tuple[str, Entry]] = []
    stack = [("", path)]
    while stack:
        rel_dir, d = stack.pop()
        try:
            with os.scandir(d) as it:
                listed = list(it)
        except OSError as e:
            snap.special.append(Problem(d, f"cannot list ({e.strerror})"))
            continue
        for de in listed:
            rel = rel_dir + de.name
            st = de.stat(follow_symlinks=False)
            mode = st.st_mode
            if S_ISREG(mode):
                entries.append((rel, ("f", st.st_size, st.st_mtime_ns, st.st_ino)))
                if st.st_mtime_ns >= racy_ns:
                    snap.untrusted.add(model)
            elif S_ISDIR(mode):
                entries.append((rel + "/", ("d", 0, 0, st.st_ino)))
                if not de.name.startswith(STAGING_PREFIX):
                    stack.append((rel + "/", de.path))
            elif S_ISLNK(mode):
                entries.append((rel, ("l", st.st_size, st.st_mtime_ns, st.st_ino)))
                snap.untrusted.add(model)
            else:
                kind = _special_kind(mode) or "a special file"
                snap.special.append(Problem(de.path, f"{kind} in the repository: sync publishes regular files only"))
    entries.sort()
    snap.models[model] = _fingerprint(entries)


def snapshot(root: Path) -> Snapshot:
    """One ``lstat`` per entry below ``root``; model folders are the root's folders."""
    snap = Snapshot()
    racy_ns = time.time_ns() - int(RACY_S * 1e9)
    real_root = root.resolve()
    for de in sorted(os.scandir(root), key=lambda d: d.name):
        if de.name.startswith(STAGING_PREFIX):
            continue
        snap.top.append(de.name)
        st = de.stat(follow_symlinks=False)
        kind = _special_kind(st.st_mode)
        if kind is not None:
            snap.special.append(Problem(de.path, f"{kind} in the repository: sync publishes regular files only"))
        elif stat.S_ISDIR(st.st_mode):
            _walk_model(de.path, de.name, snap, racy_ns)
        elif stat.S_ISLNK(st.st_mode) and Path(de.path).is_dir():
            target = Path(de.path).resolve()
            if target != real_root and real_root not in target.parents:
                why = f"symlink points outside the repository (to {os.readlink(de.path)})"
                snap.special.append(Problem(de.path, why))
            snap.models[de.name] = _fingerprint(("l", st.st_size, st.st_mtime_ns, st.st_ino))
            snap.untrusted.add(de.name)
        else:
            snap.top_files.append((de.name, ("f", st.st_size, st.st_mtime_ns, st.st_ino)))
            snap.racy_top |= st.st_mtime_ns >= racy_ns
    return snap


@dataclass(frozen=True)
class Verified:
    """A model as last verified: its entries' fingerprint, and what its manifest said then."""

    fingerprint: str
    digest: str  # the manifest's digest
    files: int  # files the manifest lists


@dataclass
class StatCache:
    """The models last verified clean, for one repository root, and the root itself (its names
    and the index file) when the index last agreed with every manifest."""

    path: Path | None
    root: str
    models: dict[str, Verified] = field(default_factory=dict)
    top: str = ""

    @classmethod
    def load(cls, path: Path | None, root: Path) -> StatCache:
        real = str(root.resolve())
        cache = cls(path, real)
        if path is None:
            return cache
        try:
            d = json.loads(path.read_bytes())
            if d.get("format_version") != CACHE_FORMAT_VERSION or d.get("root") != real:
                return cache
            cache.models = {str(m): Verified(str(v[0]), str(v[1]), int(v[2])) for m, v in d["models"].items()}
            cache.top = str(d.get("top", ""))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            # A damaged cache only costs a re-hash: never trust it, never fail on it.
            log.warning("%s: ignoring the repository stat cache (%s)", path, e)
            cache.models, cache.top = {}, ""
        return cache

    def drifted(self, snap: Snapshot) -> list[str]:
        """Models whose entries differ from the last verified state (or were never verified)."""
        return sorted(
            m for m, fp in snap.models.items()
            if m in snap.untrusted or (v := self.models.get(m)) is None or v.fingerprint != fp
        )  # fmt: skip

    def unchanged(self, snap: Snapshot) -> dict[str, Verified] | None:
        """Every model as last verified, if nothing below the root moved since (index included)."""
        top = snap.top_fingerprint()
        if top is None or top != self.top or self.drifted(snap) or set(snap.models) != set(self.models):
            return None
        return dict(self.models)

    def save(self, snap: Snapshot, verified: dict[str, tuple[str, int]]) -> None:
        """Remember the models now known clean (the unchanged ones, and ``verified``: model ->
        (manifest digest, files)) and the root, whose index the caller found in agreement."""
        keep: dict[str, Verified] = {}
        for m, fp in snap.models.items():
            if m in snap.untrusted:
                continue
            old = self.models.get(m)
            if m in verified:
                keep[m] = Verified(fp, *verified[m])
            elif old is not None and old.fingerprint == fp:
                keep[m] = old
        top = snap.top_fingerprint() or ""
        unchanged = keep == self.models and top == self.top
        self.models, self.top = keep, top
        if self.path is None or unchanged:
            return  # the no-op: nothing moved, nothing to write
        data = {"format_version": CACHE_FORMAT_VERSION, "root": self.root, "top": top,
                "models": {m: [v.fingerprint, v.digest, v.files] for m, v in sorted(keep.items())}}  # fmt: skip
        try:
            atomic_write_bytes(self.path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as e:
            log.warning("%s: cannot write the repository stat cache (%s); the next sync re-hashes", self.path, e)
