"""What a local repository holds: ``repo list`` (each version, and whether it is intact) and ``repo diff``.

``list`` checks the repository as ``repo validate`` does and marks every version a problem is about
(its folder, its files, its manifest entry) as damaged; a problem with the model's config or manifest
marks each of its versions, and one with the repository (the index) marks none but is listed too. A
caller exits non-zero when anything is damaged: listing a repository is how people look at it, and
a damaged version must not look fine there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonops.errors import RepositoryError
from tritonops.repo.manifest import CONFIG_NAME, MANIFEST_NAME, STAGING_PREFIX, ModelManifest
from tritonops.repo.model_config import live_versions, read_config
from tritonops.repo.model_config import model_config_pb2 as mc
from tritonops.repo.rule_finding import Problem
from tritonops.repo.validate import validate_repository


def config_or_none(path: Path) -> mc.ModelConfig | None:
    try:
        return read_config(path)
    except RepositoryError:
        return None


def _where(root: Path, p: Problem) -> tuple[str, int | None] | None:
    """(model, version or None) a problem is about; None when it is about the repository itself."""
    try:
        parts = Path(p.path).relative_to(root).parts
    except ValueError:
        return None
    if not parts or len(parts) == 1 and not (root / parts[0]).is_dir():
        return None
    version = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return parts[0], version


def _manifest_or_none(path: Path) -> ModelManifest | None:
    try:
        return ModelManifest.load(path)
    except RepositoryError:
        return None


def list_repository(root: Path, check: bool = True) -> dict[str, Any]:
    """Per model: backend, live versions, digest, each version's size, digest and creation time and,
    with ``check``, the problems that damage it (``repo validate``'s, every byte hashed)."""
    root = Path(root)
    if not root.is_dir():
        raise RepositoryError(f"{root}: repository folder does not exist")
    problems = validate_repository(root) if check else []
    by_model: dict[str, list[tuple[int | None, str]]] = {}
    general: list[str] = []
    for p in problems:
        w = _where(root, p)
        if w is None:
            general.append(str(p))
        else:
            by_model.setdefault(w[0], []).append((w[1], str(p)))
    models = []
    for md in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(STAGING_PREFIX)):
        man = _manifest_or_none(md / MANIFEST_NAME)
        found = by_model.get(md.name, [])
        if man is None and not found:
            continue  # not a model folder tritonops made, and nothing wrong with it
        models.append(_model_entry(md, man, found))
    return {"repository": str(root), "models": models, "problems": general,
            "damaged": bool(problems)}  # fmt: skip


def _model_entry(md: Path, man: ModelManifest | None, found: list[tuple[int | None, str]]) -> dict[str, Any]:
    cfg = config_or_none(md / CONFIG_NAME)
    whole = [msg for v, msg in found if v is None]  # the config or manifest: every version
    versions = man.versions if man is not None else {}
    on_disk = sorted(int(p.name) for p in md.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0")
    rows = []
    for n in sorted(set(versions) | set(on_disk) | {v for v, _ in found if v is not None}):
        v = versions.get(n)
        own = [msg for vn, msg in found if vn == n] + whole
        rows.append({
            "version": n,
            "size": v.size if v else None,
            "digest": v.digest if v else None,
            "files": len(v.files) if v else None,
            "created": v.created if v else None,
            "metadata": v.metadata if v else {},
            "damaged": bool(own),
            "problems": own,
        })  # fmt: skip
    return {
        "model": md.name,
        "platform": cfg.platform if cfg else None,
        "backend": (cfg.backend or None) if cfg else None,
        "digest": man.digest if man else None,
        "live_versions": live_versions(cfg, list(versions)),
        "size": sum(v.size for v in versions.values()),
        "damaged": bool(found),
        "problems": whole,
        "versions": rows,
    }


def _manifests_by_model(root: Path) -> dict[str, ModelManifest]:
    if not root.is_dir():
        raise RepositoryError(f"{root}: repository folder does not exist")
    return {
        p.name: ModelManifest.load(p / MANIFEST_NAME)
        for p in sorted(root.iterdir())
        if p.is_dir() and (p / MANIFEST_NAME).exists()
    }


def diff_repositories(old: Path, new: Path) -> dict[str, Any]:
    """Models and versions added, removed or changed between two repositories (by digest)."""
    a, b = _manifests_by_model(Path(old)), _manifests_by_model(Path(new))
    changed = []
    for m in sorted(set(a) & set(b)):
        ma, mb = a[m], b[m]
        if ma.digest == mb.digest:
            continue
        va, vb = set(ma.versions), set(mb.versions)
        changed.append(
            {
                "model": m,
                "config_changed": ma.config_sha256 != mb.config_sha256,
                "versions_added": sorted(vb - va),
                "versions_removed": sorted(va - vb),
                "versions_changed": sorted(
                    n for n in va & vb if ma.versions[n].digest != mb.versions[n].digest
                ),
            }
        )
    return {
        "old": str(old),
        "new": str(new),
        "models_added": sorted(set(b) - set(a)),
        "models_removed": sorted(set(a) - set(b)),
        "models_changed": changed,
    }


def diff_versions(root: Path, model: str, old: int, new: int) -> dict[str, Any]:
    """Files added, removed or changed between two versions of one model (from the manifest)."""
    mpath = Path(root) / model / MANIFEST_NAME
    man = ModelManifest.load(mpath)
    for n in (old, new):
        if n not in man.versions:
            raise RepositoryError(f"{mpath}: model {model!r} has no version {n}")
    fa = {f.path: f for f in man.versions[old].files}
    fb = {f.path: f for f in man.versions[new].files}
    return {
        "model": model,
        "old": old,
        "new": new,
        "files_added": sorted(set(fb) - set(fa)),
        "files_removed": sorted(set(fa) - set(fb)),
        "files_changed": sorted(p for p in set(fa) & set(fb) if fa[p].sha256 != fb[p].sha256),
        "size_old": man.versions[old].size,
        "size_new": man.versions[new].size,
    }
