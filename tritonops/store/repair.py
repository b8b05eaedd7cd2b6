"""``sync --repair``: put a region's published versions back to what their manifests say.

Each published version the local repository still holds with the same digest is checked with
:func:`tritonops.store.verify.verify_version` (cheap: sizes, recorded sha256, extra objects; with
``full`` also the bytes). Objects that differ or are missing are uploaded again from the local
files (their sha256 checked against the manifest as they go up); objects in a published version
folder that the manifest does not list are deleted. Then the version is checked again.

A version whose local files differ from the published manifest cannot be repaired from here: that
is a changed version (``--force`` replaces it) and is reported, not guessed at.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.errors import RepositoryError, StoreError
from tritonops.repo.manifest import ModelManifest
from tritonops.store.base import ObjectStore
from tritonops.store.verify import Mismatch, verify_version

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    checked_versions: int = 0
    found: list[Mismatch] = field(default_factory=list)
    configs_found: list[str] = field(default_factory=list)  # published configs sync would not have written
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked_versions": self.checked_versions,
            "found": [m.line() for m in self.found] + self.configs_found,
            "uploaded": self.uploaded,
            "deleted": self.deleted,
        }


def repair_published(
    store: ObjectStore,
    published: Mapping[str, ModelManifest],
    local: Mapping[str, ModelManifest],
    root: Path,
    *,
    region: str = "",
    full: bool = False,
    dry_run: bool = False,
    skip: Collection[tuple[str, int]] = (),
) -> RepairReport:
    """Check every published version (but ``skip``) and fix what differs; ``dry_run`` only reports."""
    rep = RepairReport()
    for model, man in sorted(published.items()):
        for n in sorted(man.versions):
            if (model, n) in skip:
                continue
            rep.checked_versions += 1
            bad = verify_version(store, man, n, full=full, region=region)
            if not bad:
                continue
            rep.found += bad
            lv = local[model].versions.get(n) if model in local else None
            if lv is None or lv.digest != man.versions[n].digest:
                raise StoreError(
                    f"{bad[0].line()}; cannot repair: the local repository does not hold this version "
                    "as published (rebuild it, or publish a new version)"
                )
            if dry_run:
                continue
            _fix(store, man, n, bad, root, rep)
            again = verify_version(store, man, n, full=full, region=region)
            if again:
                raise StoreError(f"repair did not take: {again[0].line()}")
            log.info("region %s: model %s version %d repaired", region, model, n)
    return rep


def _fix(store: ObjectStore, man: ModelManifest, n: int, bad: list[Mismatch], root: Path, rep: RepairReport) -> None:
    files = {f"{man.model}/{n}/{f.path}": f for f in man.versions[n].files}
    for m in bad:
        if m.extra:
            continue
        f = files[m.key]
        path = root / man.model / str(n) / f.path
        digest = store.put_file(m.key, str(path), f.size, f.sha256)
        if digest != f.sha256:
            raise RepositoryError(
                f"{path}: model {man.model!r} version {n}: sha256 {digest[:12]}... differs from the manifest "
                f"({f.sha256[:12]}...); the local file changed: nothing was uploaded for it"
            )
        rep.uploaded.append(m.key)
    extras = [m.key for m in bad if m.extra]
    if extras:
        store.delete(extras)
        rep.deleted += extras
