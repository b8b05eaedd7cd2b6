"""Local drift: which models changed on disk since they were last verified, without re-hashing.

The way git's index does it: after a model's bytes are verified against its manifest, remember
``(size, mtime_ns, inode)`` of every file below it and the names of every folder entry. Next time
one ``lstat`` per entry tells which models moved; only those are re-validated (and re-hashed).
A file added or removed, a folder named ``01``, an edited config.pbtxt or a changed byte all change
an entry, so they are caught while the no-op sync stays a walk of ``lstat`` calls.

Limits, as in git: a write that keeps the size and puts back the old mtime on the same inode is
not seen; ``tritonops repo validate`` (or deleting the cache) re-hashes everything.
"Racy" entries (modified within ``RACY_S`` of the walk) are never trusted: a write in the same
clock tick as the hash would otherwise go unseen.

Special files (FIFO, socket, device) are refused here directly: sync publishes regular files only.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from tritonops.fileio import atomic_write_bytes
from tritonops.repo.manifest import STAGING_PREFIX
from tritonops.repo.rule_finding import Problem

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
RACY_S = 2.0

# One entry: kind ("f" file, "d" folder, "l" symlink), size, mtime_ns, inode.
Entry = tuple[str, int, int, int]


@dataclass
class Snapshot:
    """What one walk of the repository saw."""

    models: dict[str, dict[str, Entry]] = field(default_factory=dict)
    top: list[str] = field(default_factory=list)  # every name at the root, but staging folders
    special: list[Problem] = field(default_factory=list)
    untrusted: set[str] = field(default_factory=set)  # symlinks or racy entries: always re-validate


def _special_kind(mode: int) -> str | None:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):  # fmt: skip
        if test(mode):
            return name
    return None


def _walk_model(path: Path, model: str, snap: Snapshot, racy_ns: int) -> None:
    entries: dict[str, Entry] = {}
    stack = [("", path)]
    while stack:
        rel_dir, d = stack.pop()
        try:
            it = list(os.scandir(d))
        except OSError as e:
            snap.special.append(Problem(str(d), f"cannot list ({e.strerror})"))
            continue
        for de in it:
            rel = f"{rel_dir}{de.name}"
            st = de.stat(follow_symlinks=False)
            kind = _special_kind(st.st_mode)
            if kind is not None:
                snap.special.append(Problem(de.path, f"{kind} in the repository: sync publishes regular files only"))
                continue
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("l", st.st_size, st.st_mtime_ns, st.st_ino)
                snap.untrusted.add(model)
            elif stat.S_ISDIR(st.st_mode):
                entries[rel + "/"] = ("d", 0, 0, st.st_ino)
                if not de.name.startswith(STAGING_PREFIX):
                    stack.append((rel + "/", Path(de.path)))
            else:
                entries[rel] = ("f", st.st_size, st.st_mtime_ns, st.st_ino)
                if st.st_mtime_ns >= racy_ns:
                    snap.untrusted.add(model)
    snap.models[model] = entries


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
            _walk_model(Path(de.path), de.name, snap, racy_ns)
        elif stat.S_ISLNK(st.st_mode) and Path(de.path).is_dir():
            target = Path(de.path).resolve()
            if target != real_root and real_root not in target.parents:
                why = f"symlink points outside the repository (to {os.readlink(de.path)})"
                snap.special.append(Problem(de.path, why))
            snap.models[de.name] = {"": ("l", st.st_size, st.st_mtime_ns, st.st_ino)}
            snap.untrusted.add(de.name)
    return snap


@dataclass
class StatCache:
    """The entries of every model last verified clean, for one repository root."""

    path: Path | None
    root: str
    models: dict[str, dict[str, Entry]] = field(default_factory=dict)

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
            cache.models = {
                str(m): {str(k): (str(v[0]), int(v[1]), int(v[2]), int(v[3])) for k, v in ents.items()}
                for m, ents in d["models"].items()
            }
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            # A damaged cache only costs a re-hash: never trust it, never fail on it.
            log.warning("%s: ignoring the repository stat cache (%s)", path, e)
            cache.models = {}
        return cache

    def drifted(self, snap: Snapshot) -> list[str]:
        """Models whose entries differ from the last verified state (or were never verified)."""
        return sorted(m for m, ents in snap.models.items() if m in snap.untrusted or self.models.get(m) != ents)

    def save(self, snap: Snapshot, verified: set[str]) -> None:
        """Remember the entries of models now known clean: the unchanged ones and ``verified``."""
        keep: dict[str, dict[str, Entry]] = {}
        for m, ents in snap.models.items():
            if m in snap.untrusted:
                continue
            if m in verified or self.models.get(m) == ents:
                keep[m] = ents
        unchanged = keep == self.models
        self.models = keep
        if self.path is None or unchanged:
            return  # the no-op: nothing moved, nothing to write
        data = {"format_version": CACHE_FORMAT_VERSION, "root": self.root,
                "models": {m: {k: list(v) for k, v in sorted(e.items())} for m, e in sorted(keep.items())}}  # fmt: skip
        try:
            atomic_write_bytes(self.path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as e:
            log.warning("%s: cannot write the repository stat cache (%s); the next sync re-hashes", self.path, e)
