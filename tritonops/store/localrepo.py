"""The local repository as sync reads it: validated as `repo validate` validates it, cheaply.

A model that did not move on disk since it was last verified (:mod:`tritonops.repo.drift`) is not
validated again; when nothing below the root moved (the index file included), not even its
manifest is parsed: its digest and file count come from the stat cache, and the manifest is read
only if sync needs it (the model changed in the bucket). A no-op sync of 1,000 models is then one
``lstat`` per entry and one GET.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tritonops.config import Config
from tritonops.errors import RepositoryError
from tritonops.repo.manifest import INDEX_NAME, MANIFEST_NAME, ModelManifest, RepoIndex, load_model_manifests

log = logging.getLogger(__name__)

STAT_CACHE_NAME = "repository-stat.json"


def validate_local(
    root: Path, models: Collection[str] | None = None, hash_files: bool = True
) -> list[ModelManifest]:
    """Refuse to publish what ``tritonops repo validate`` rejects; returns the manifests.

    ``models``: check only these (the ones about to be published) plus the index; None checks all.
    ``hash_files`` False: sizes only (see :class:`LocalRepository` for who hashes the bytes).
    """
    from tritonops.repo.validate import validate_repository

    problems = validate_repository(root, models, hash_files)
    if problems:
        more = f" (and {len(problems) - 1} more; run `tritonops repo validate`)" if len(problems) > 1 else ""
        raise RepositoryError(f"refusing to publish an invalid repository: {problems[0]}{more}")
    return load_model_manifests(root)


def stat_cache_path(cfg: Config) -> Path:
    """Where sync remembers (size, mtime_ns, inode) of every verified file (see repo.drift)."""
    return cfg.state_path / STAT_CACHE_NAME


def _files(man: ModelManifest) -> int:
    return sum(len(v.files) for v in man.versions.values())


class LocalModels(Mapping[str, ModelManifest]):
    """The local models by name. A manifest is parsed when first asked for; a model the stat cache
    vouches for has its digest and file count without that (:meth:`digest`, :meth:`files`)."""

    def __init__(
        self, root: Path, loaded: Iterable[ModelManifest] = (), known: Mapping[str, tuple[str, int]] | None = None
    ) -> None:
        self.root = root
        self._loaded = {m.model: m for m in loaded}
        self._known = dict(known or {})
        self._names = sorted(set(self._loaded) | set(self._known))

    def __getitem__(self, model: str) -> ModelManifest:
        man = self._loaded.get(model)
        if man is not None:
            return man
        if model not in self._known:
            raise KeyError(model)
        path = self.root / model / MANIFEST_NAME
        man = ModelManifest.load(path)
        if man.digest != self._known[model][0]:
            raise RepositoryError(f"{path}: changed during sync (it was verified a moment ago); rerun")
        self._loaded[model] = man
        return man

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, model: object) -> bool:
        return model in self._loaded or model in self._known

    def digest(self, model: str) -> str:
        known = self._known.get(model)
        return known[0] if known is not None else self[model].digest

    def files(self, model: str) -> int:
        """Files the model's manifest lists (over every version)."""
        known = self._known.get(model)
        return known[1] if known is not None else _files(self[model])


@dataclass
class LocalRepository:
    """The local repository as sync sees it: every model validated, and the files whose bytes are
    still to be proven against their manifest (those of models that moved on disk since they were
    last verified; their sizes are checked).

    Each such file is hashed once: an uploaded one as it is sent (:meth:`sent`), any other before
    the region's first write (:meth:`prove`), so a file changed after ``repo add`` is refused
    either way. Once every one is proven, the stat cache remembers their models as verified.
    """

    root: Path
    models: LocalModels
    unproven: dict[Path, tuple[int, str]] = field(default_factory=dict)  # path -> (version, sha256)
    _save: Callable[[], None] | None = None

    def prove(self, skip: Collection[Path] = (), workers: int = 4) -> None:
        """Hash the unproven files but ``skip`` (those about to be sent); raise on the first mismatch."""
        from tritonops.fileio import sha256_file

        skipped = set(skip)
        todo = [p for p in self.unproven if p not in skipped]
        if not todo:
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="sync-hash") as pool:
            digests = list(pool.map(sha256_file, todo))
        for p, digest in zip(todo, digests, strict=True):
            n, want = self.unproven[p]
            if digest != want:
                raise RepositoryError(
                    f"refusing to publish an invalid repository: {p}: manifest mismatch: bytes changed under "
                    f"existing version {n} (sha256 recorded {want[:12]}...)"
                )
        self.sent(todo)

    def sent(self, paths: Iterable[Path]) -> None:
        """These files' bytes were proven (hashed as sent, or by :meth:`prove`)."""
        for p in paths:
            self.unproven.pop(p, None)
        if not self.unproven and self._save is not None:
            self._save()
            self._save = None


def open_local(root: Path, cache_path: Path | None = None) -> LocalRepository:
    """The local manifests, with every model that moved since last verified (a size, mtime or inode
    changed, a file or folder was added or removed; see :mod:`tritonops.repo.drift`) validated as
    `repo validate` does but for its bytes, left to :class:`LocalRepository`. The others cost one
    ``lstat`` per entry. Without ``cache_path`` every model is validated. Special files are refused.
    """
    from tritonops.repo.drift import StatCache, snapshot

    if not root.is_dir():
        return LocalRepository(root, LocalModels(root, validate_local(root, models=())))  # one line: no folder
    snap = snapshot(root)
    if snap.special:
        more = f" (and {len(snap.special) - 1} more)" if len(snap.special) > 1 else ""
        raise RepositoryError(f"refusing to publish an invalid repository: {snap.special[0]}{more}")
    cache = StatCache.load(cache_path, root)
    known = cache.unchanged(snap)
    if known is not None:  # nothing moved: the cache vouches for every model and for the index
        return LocalRepository(root, LocalModels(root, known={m: (v.digest, v.files) for m, v in known.items()}))
    drifted = cache.drifted(snap)
    if not drifted:  # the models did not move, the root did (the index file, a name at the root)
        manifests = _manifests_if_index_agrees(root)
        cache.save(snap, {})
        return LocalRepository(root, LocalModels(root, manifests))
    log.info("%s: %d model(s) changed on disk since last verified; validating them", root, len(drifted))
    manifests = validate_local(root, drifted, hash_files=False)
    moved = set(drifted)
    records = {m.model: (m.digest, _files(m)) for m in manifests if m.model in moved}
    local = LocalRepository(root, LocalModels(root, manifests), _save=lambda: cache.save(snap, records))
    for man in manifests:
        if man.model in records:
            for n, v in man.versions.items():
                local.unproven.update({root / man.model / str(n) / f.path: (n, f.sha256) for f in v.files})
    local.sent(())  # nothing to prove (no file in the drifted models): remember them now
    return local


def load_local(root: Path, cache_path: Path | None = None) -> list[ModelManifest]:
    """The local manifests, once every model is proven to match them (bytes included)."""
    local = open_local(root, cache_path)
    local.prove()
    return list(local.models.values())


def _manifests_if_index_agrees(root: Path) -> list[ModelManifest]:
    """An index that agrees with the manifests needs nothing more (a no-op sync then never imports the
    validator and its protobuf schema); anything else goes through the validator, which names it."""
    try:
        manifests = load_model_manifests(root)
        index = RepoIndex.loads((root / INDEX_NAME).read_bytes(), str(root / INDEX_NAME))
    except (OSError, RepositoryError):
        return validate_local(root, models=())
    if index.models == RepoIndex.from_manifests(manifests).models:
        return manifests
    return validate_local(root, models=())
