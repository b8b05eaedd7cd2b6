"""Validation: what Triton would reject, or silently misread, found before anything is published.

Every problem names the file, the line where one is known, and the field. This module checks a
repository as a whole: its tree (symlinks, object keys, special files), each model's version folders,
the bytes recorded in tritonops' manifests, and the index; each config is checked by
:mod:`tritonops.repo.config_checks` (its names are re-exported here).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from collections.abc import Collection
from pathlib import Path

from tritonops.errors import RepositoryError
from tritonops.fileio import sha256_file
from tritonops.repo.config_checks import (  # re-exported: see __all__
    DEFAULT_MODEL_FILENAME,
    ONNX_TO_TRITON,
    VERSION_RE,
    check_config,
    check_onnx,
    dtype_name,
    expected_model_filename,
    onnx_signature,
    parse_for_validation,
)
from tritonops.repo.manifest import CONFIG_NAME, INDEX_NAME, MANIFEST_NAME, STAGING_PREFIX, ModelManifest, RepoIndex
from tritonops.repo.rule_finding import Problem

__all__ = [
    "DEFAULT_MODEL_FILENAME", "MODEL_NAME_RE", "OBJECT_KEY_RE", "ONNX_TO_TRITON", "STAGING_PREFIX", "VERSION_RE",
    "Problem", "check_config", "check_manifest", "check_onnx", "check_special_files", "check_tree", "dtype_name",
    "expected_model_filename", "onnx_signature", "parse_for_validation", "validate_model_dir",
    "validate_repository", "version_dirs_of",
]  # fmt: skip

log = logging.getLogger(__name__)

MODEL_NAME_RE = re.compile(r"^[0-9A-Za-z_][0-9A-Za-z._-]*$")
# Characters that survive every S3-compatible store and Triton's own key handling unescaped.
OBJECT_KEY_RE = re.compile(r"^[0-9A-Za-z._/-]+$")


def _is_staging(name: str) -> bool:
    return name.startswith(STAGING_PREFIX)


def check_tree(root: Path, top: Path) -> list[Problem]:
    """Symlinks escaping the repository and object keys S3 or Triton would mangle."""
    out: list[Problem] = []
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_staging(d))
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if not OBJECT_KEY_RE.match(rel):
                bad = "".join(sorted({ch for ch in rel if not OBJECT_KEY_RE.match(ch)}))
                out.append(
                    Problem(
                        str(p),
                        f"object key {rel!r} has characters outside [0-9A-Za-z._/-] "
                        f"({bad!r}): S3 stores or Triton may not fetch it",
                    )
                )
            if p.is_symlink():
                target = p.resolve()
                if not (target == real_root or real_root in target.parents):
                    out.append(
                        Problem(str(p), f"symlink points outside the repository (to {os.readlink(p)})")
                    )
                elif not target.exists():
                    out.append(Problem(str(p), f"symlink is broken (to {os.readlink(p)})"))
    return out


def check_special_files(top: Path) -> list[Problem]:
    """FIFOs, sockets, devices and symlinks under a model folder (lstat only: a FIFO is never opened).

    ``repo add`` writes only regular files, so anything else was put there by hand; sync would
    publish a link's target or hang on a FIFO. Links escaping the repository are also named by
    check_tree; here every link inside a model folder is.
    """
    kinds = (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    )
    out: list[Problem] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_staging(d))
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            for test, kind in kinds:
                if test(mode):
                    out.append(Problem(str(p), f"{kind}: a repository holds only regular files and folders"))
    return out


def check_manifest(
    model_dir: Path, version_dirs: list[Path], config_path: Path, hash_files: bool = True
) -> list[Problem]:
    """Every version's bytes equal what the manifest recorded when the version was created."""
    mpath = model_dir / MANIFEST_NAME
    if not mpath.exists():
        return [
            Problem(
                str(mpath),
                "manifest missing (versions not created by `tritonops repo add` cannot be "
                "trusted to be immutable)",
            )
        ]
    try:
        man = ModelManifest.load(mpath)
    except RepositoryError as e:
        return [Problem(str(mpath), str(e).split(": ", 1)[-1])]
    out: list[Problem] = []
    if man.model != model_dir.name:
        out.append(
            Problem(str(mpath), f"model: {man.model!r} differs from the folder name {model_dir.name!r}")
        )
    if config_path.exists() and man.config_sha256 and sha256_file(config_path) != man.config_sha256:
        out.append(
            Problem(
                str(config_path),
                "config_sha256: config.pbtxt changed since the manifest was "
                "written (change configs with `tritonops repo add --config`)",
            )
        )
    on_disk = {int(v.name): v for v in version_dirs if VERSION_RE.match(v.name)}
    for n in sorted(set(on_disk) - set(man.versions)):
        out.append(Problem(str(on_disk[n]), f"version {n}: not in the manifest {mpath}"))
    for n in sorted(set(man.versions) - set(on_disk)):
        out.append(
            Problem(str(model_dir / str(n)), f"version {n}: in the manifest but the folder is missing")
        )
    for n in sorted(set(on_disk) & set(man.versions)):
        vd, entry = on_disk[n], man.versions[n]
        recorded = {f.path: f for f in entry.files}
        actual = {p.relative_to(vd).as_posix(): p for p in sorted(vd.rglob("*")) if p.is_file()}
        for rel in sorted(set(actual) - set(recorded)):
            out.append(Problem(str(actual[rel]), f"manifest mismatch: file added under existing version {n}"))
        for rel in sorted(set(recorded) - set(actual)):
            out.append(Problem(str(vd / rel), f"manifest mismatch: file removed from existing version {n}"))
        for rel in sorted(set(actual) & set(recorded)):
            p, f = actual[rel], recorded[rel]
            if p.stat().st_size != f.size or (hash_files and sha256_file(p) != f.sha256):
                out.append(
                    Problem(
                        str(p),
                        f"manifest mismatch: bytes changed under existing version {n} "
                        f"(sha256 recorded {f.sha256[:12]}...)",
                    )
                )
    return out


def version_dirs_of(model_dir: Path) -> list[Path]:
    return sorted(
        (p for p in model_dir.iterdir() if p.is_dir() and VERSION_RE.match(p.name)), key=lambda p: int(p.name)
    )


def validate_model_dir(
    root: Path, model_dir: Path, known_models: set[str] | None, hash_files: bool = True
) -> list[Problem]:
    out: list[Problem] = []
    name = model_dir.name
    if not MODEL_NAME_RE.match(name):
        out.append(
            Problem(str(model_dir), f"model name {name!r}: use only [0-9A-Za-z._-], not starting with '.'")
        )
    for p in sorted(model_dir.iterdir()):
        if p.is_dir() and not VERSION_RE.match(p.name) and not _is_staging(p.name):
            why = "starts with 0" if p.name[:1] == "0" else "is not a positive integer"
            out.append(Problem(str(p), f"version folder {p.name!r} {why}: Triton ignores it"))
    vdirs = version_dirs_of(model_dir)
    config_path = model_dir / CONFIG_NAME
    cfg, text, parse_problems = parse_for_validation(config_path)
    out += parse_problems
    if not vdirs:
        out.append(Problem(str(model_dir), "no version folder (Triton loads nothing)"))
    is_ensemble = cfg is not None and cfg.platform == "ensemble"
    for vd in vdirs:
        if not any(p.is_file() for p in vd.rglob("*")):
            # S3 has no folders, only keys: an empty version folder does not exist once published.
            why = (
                " (an ensemble's version needs a placeholder file: S3 has no empty folders)"
                if is_ensemble
                else ""
            )
            out.append(Problem(str(vd), f"version {vd.name} is empty{why}"))
    if cfg is not None:
        out += check_config(
            cfg, config_path, text, model_name=name, version_dirs=vdirs, known_models=known_models
        )
    out += check_manifest(model_dir, vdirs, config_path, hash_files)
    return out


def validate_repository(
    root: Path, models: Collection[str] | None = None, hash_files: bool = True
) -> list[Problem]:
    """Every problem in a local repository; an empty list means valid.

    ``models`` limits the per-model checks (config, files, sha256 of every byte) to those models;
    the index is always checked. Sync passes the models it is about to publish, so a no-op sync
    of a large repository does not re-hash bytes it will not send. ``hash_files`` False checks the
    files' sizes but not their bytes: sync proves those itself, hashing each file once.
    """
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), "repository folder does not exist")]
    model_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_staging(p.name))
    known = {p.name for p in model_dirs if (p / CONFIG_NAME).exists()}
    if models is None:
        out: list[Problem] = check_tree(root, root)
        selected = model_dirs
    else:
        wanted = set(models)
        selected = [md for md in model_dirs if md.name in wanted]
        out = []
        for md in selected:
            out += check_tree(root, md)
    for md in selected:
        if md.is_symlink():
            continue  # reported by check_tree if it escapes
        out += check_special_files(md)
        out += validate_model_dir(root, md, known, hash_files)
    out += _check_index(root, model_dirs)
    return out


def _check_index(root: Path, model_dirs: list[Path]) -> list[Problem]:
    ipath = root / INDEX_NAME
    manifests = []
    for md in model_dirs:
        with contextlib.suppress(RepositoryError):  # reported per model
            manifests.append(ModelManifest.load(md / MANIFEST_NAME))
    if not ipath.exists():
        return [Problem(str(ipath), "repository index missing")] if manifests else []
    raw = ipath.read_bytes()
    try:
        # What the index lists is compared with the manifests first (names the models); its own
        # digest after, since an edited index usually also breaks that.
        idx = RepoIndex.loads(raw, str(ipath), verify=False)
        expected = RepoIndex.from_manifests(manifests)
        if idx.digest != expected.digest or idx.models != expected.models:
            changed = sorted(
                m for m in set(idx.models) | set(expected.models) if idx.models.get(m) != expected.models.get(m)
            )
            return [
                Problem(
                    str(ipath), f"digest: the index is out of date with the manifests of: {', '.join(changed)}"
                )
            ]
        RepoIndex.loads(raw, str(ipath))
    except RepositoryError as e:
        return [Problem(str(ipath), str(e).split(": ", 1)[-1])]
    return []
