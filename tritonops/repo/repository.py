"""Building a versioned model repository: add immutable versions, record metadata, list, diff, prune.

Every change is staged in a temporary folder inside the repository root (same filesystem, so the
final step is a rename), validated there, and only then moved into place; the model manifest and
the repository index are written last. A failure at any point leaves the repository as it was.
One writer at a time: an flock on ``<root>/.tritonops-lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tritonops.errors import RepositoryError
from tritonops.fileio import HASH_CHUNK_BYTES, atomic_write_bytes, read_chunks, sha256_bytes
from tritonops.repo.manifest import (
    CONFIG_NAME,
    MANIFEST_NAME,
    FileEntry,
    ModelManifest,
    VersionEntry,
    write_index,
)
from tritonops.repo.model_config import RUNTIMES as MODEL_RUNTIMES
from tritonops.repo.model_config import (
    GraphTensor,
    Runtime,
    config_to_text,
    generate_config,
    live_versions,
    parse_config_text,
    read_config,
    set_specific_versions,
)
from tritonops.repo.model_config import model_config_pb2 as mc
from tritonops.repo.validate import (
    MODEL_NAME_RE,
    OBJECT_KEY_RE,
    ONNX_TO_TRITON,
    STAGING_PREFIX,
    VERSION_RE,
    Problem,
    check_config,
    onnx_signature,
    version_dirs_of,
)
from tritonops.repo.validate import validate_repository as validate_repository  # re-exported

log = logging.getLogger(__name__)

LOCK_NAME = f"{STAGING_PREFIX}lock"

__all__ = [
    "add_version",
    "set_version_metadata",
    "validate_repository",
    "list_repository",
    "prune_repository",
    "diff_repositories",
    "diff_versions",
    "generate_onnx_config",
    "Problem",
]


@contextlib.contextmanager
def repo_lock(root: Path) -> Iterator[None]:
    """Exclusive writer lock for a repository (blocks until free; flock dies with the process)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def copy_hashed(src: Path, dst: Path, rel: str, chunk_bytes: int = HASH_CHUNK_BYTES) -> FileEntry:
    """Copy one file and hash it in the same pass; memory stays at one chunk whatever the size.

    The source is opened without following a symlink and without blocking (a FIFO swapped in
    after the walk would hang a plain open), and must still be a regular file once open.
    """
    h = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise RepositoryError(f"{src}: cannot read: {e.strerror}") from None
    with open(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RepositoryError(f"{src}: not a regular file (it changed while being added)")
        with open(dst, "wb") as fout:
            for b in read_chunks(fin, chunk_bytes):
                h.update(b)
                fout.write(b)
                size += len(b)
            fout.flush()
            os.fsync(fout.fileno())
    return FileEntry(rel, size, h.hexdigest())


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def _refuse_unless_regular(p: Path, st: os.stat_result) -> None:
    """One line naming ``p`` if it is anything but a regular file or a folder (checked with lstat)."""
    if stat.S_ISLNK(st.st_mode):
        raise RepositoryError(
            f"{p}: symlink (to {os.readlink(p)}) refused: a version holds only regular files "
            "(copy the file in instead)"
        )
    for test, kind in _SPECIAL_KINDS:
        if test(st.st_mode):
            raise RepositoryError(f"{p}: {kind} refused: a version holds only regular files")


def _walk_error(e: OSError) -> None:
    raise RepositoryError(f"{e.filename}: cannot read folder: {e.strerror}")


def _source_files(files_from: Path) -> list[tuple[Path, str]]:
    """(absolute source, relative path in the version) for every file to add.

    Only regular files and folders are accepted. Every symlink inside the source is refused, so
    nothing from outside the source (``/etc/shadow``) can end up in a version; the source path
    itself may be a link, since the user named it. FIFOs, sockets and devices are refused: each
    entry is lstat'ed, never opened, before it is copied.
    """
    try:
        st = os.stat(files_from)
    except FileNotFoundError:
        raise RepositoryError(f"{files_from}: no such file or folder") from None
    except OSError as e:
        raise RepositoryError(f"{files_from}: cannot read: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        _refuse_unless_regular(files_from, st)
        return [(files_from, files_from.name)]
    out = []
    for dirpath, dirnames, filenames in os.walk(files_from, onerror=_walk_error, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            lst = os.lstat(p)
            _refuse_unless_regular(p, lst)
            if stat.S_ISREG(lst.st_mode):
                if not os.access(p, os.R_OK):
                    raise RepositoryError(f"{p}: cannot read: permission denied")
                out.append((p, p.relative_to(files_from).as_posix()))
    if not out:
        raise RepositoryError(
            f"{files_from}: folder holds no files (an empty version; an ensemble's version needs a "
            "placeholder file, since S3 has no empty folders)"
        )
    return out


def generate_onnx_config(
    model: str, onnx_path: Path, runtime: Runtime | str = Runtime.onnxruntime
) -> mc.ModelConfig:
    """A config from the ONNX graph: every graph input and output, dims as in the graph (-1 for symbolic).

    max_batch_size stays 0 (dims are the full shape): it loads for any graph. Batching needs a
    config saying so (``--config``), since only a person knows the first dimension is a batch.
    """
    g_in, g_out = onnx_signature(onnx_path)
    graph: list[list[GraphTensor]] = []
    for tensors in (g_in, g_out):
        graph.append([])
        for name, (etype, dims) in tensors.items():
            if etype not in ONNX_TO_TRITON:
                raise RepositoryError(
                    f"{onnx_path}: {name}: ONNX element type {etype} has no Triton data type"
                )
            graph[-1].append(GraphTensor(name, ONNX_TO_TRITON[etype], dims))
    return generate_config(model, graph[0], graph[1], runtime)


def _describe(platform: str, backend: str) -> str:
    return f"backend {backend}" if backend else f"platform {platform}"


def _next_version(model_dir: Path, manifest: ModelManifest | None) -> int:
    on_disk = (
        [int(p.name) for p in model_dir.iterdir() if p.is_dir() and VERSION_RE.match(p.name)]
        if model_dir.is_dir()
        else []
    )
    known = list(manifest.versions) if manifest else []
    return max([0, *on_disk, *known]) + 1


def _resolve_config(
    model: str,
    model_dir: Path,
    config: mc.ModelConfig | Path | None,
    staged_version: Path,
    new_version: int,
    prev_latest: int | None,
) -> mc.ModelConfig:
    if isinstance(config, Path):
        cfg = read_config(config)
        given = True
    elif config is not None:
        cfg = mc.ModelConfig()
        cfg.CopyFrom(config)
        given = True
    elif (model_dir / CONFIG_NAME).exists():
        cfg = read_config(model_dir / CONFIG_NAME)
        given = False
    elif (staged_version / "model.onnx").is_file():
        cfg = generate_onnx_config(model, staged_version / "model.onnx")
        given = False
    elif (staged_version / "model.py").is_file():
        raise RepositoryError(
            f"{model}: a python model needs a config (pass --config FILE): its inputs and "
            "outputs cannot be read from model.py"
        )
    else:
        raise RepositoryError(
            f"{model}: no config.pbtxt yet and none can be generated (only model.onnx can); "
            "pass --config FILE"
        )
    if cfg.name and cfg.name != model:
        raise RepositoryError(
            f"{config if isinstance(config, Path) else model}: name: config says {cfg.name!r} "
            f"but the model is {model!r}"
        )
    cfg.name = model
    which = cfg.version_policy.WhichOneof("policy_choice") if cfg.HasField("version_policy") else None
    # The new version goes live unless a policy was chosen on purpose: a given config's own policy,
    # or an existing one other than the "newest only" tritonops writes.
    rolling = which is None or (
        not given and which == "specific" and list(cfg.version_policy.specific.versions) == [prev_latest]
    )
    if rolling:
        set_specific_versions(cfg, [new_version])
    return cfg


def _raise_problems(model: str, problems: list[Problem], staging: Path, final: Path) -> None:
    if not problems:
        return
    first = str(problems[0]).replace(str(staging), str(final))
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    raise RepositoryError(f"{first}{more}")


def _checked_inputs(
    model: str, files_from: Path, source: dict[str, Any] | None, metadata: dict[str, Any] | None
) -> list[tuple[Path, str]]:
    """Everything ``add_version`` can refuse before it takes the lock: the name, the source's files, the metadata."""
    if not MODEL_NAME_RE.match(model):
        raise RepositoryError(f"model name {model!r}: use only [0-9A-Za-z._-], not starting with '.'")
    files = _source_files(files_from)
    for _, rel in files:
        if not OBJECT_KEY_RE.match(f"{model}/{rel}"):
            raise RepositoryError(
                f"{files_from / rel}: file name has characters outside [0-9A-Za-z._/-]: "
                "S3 stores or Triton may not fetch it"
            )
    for extra in (source, metadata):
        try:
            json.dumps(extra or {}, allow_nan=False)  # JSON has no NaN: a manifest must stay JSON
        except (TypeError, ValueError) as e:
            raise RepositoryError(
                f"{model}: source/metadata must be JSON-serialisable, without NaN or Infinity ({e})"
            ) from None
    return files


def add_version(
    root: Path,
    model: str,
    files_from: Path,
    *,
    config: mc.ModelConfig | Path | None = None,
    source: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> VersionEntry:
    """Create version N+1 of ``model`` from a folder's contents (or a single file); never rewrites a version.

    Nothing is written if anything fails: files are copied (and hashed in the same pass) into a
    staging folder inside ``root``, validated with the config (and the ONNX graph), then renamed
    into place; config, manifest and index follow.
    """
    root = Path(root)
    files_from = Path(files_from)
    files = _checked_inputs(model, files_from, source, metadata)
    with repo_lock(root):
        _sweep_staging(root)
        model_dir = root / model
        manifest: ModelManifest | None = None
        if (model_dir / MANIFEST_NAME).exists():
            manifest = ModelManifest.load(model_dir / MANIFEST_NAME)
        elif model_dir.is_dir() and any(model_dir.iterdir()):
            raise RepositoryError(
                f"{model_dir}: exists but has no {MANIFEST_NAME}: not created by tritonops, "
                "refusing to add versions to it"
            )
        prev_latest = manifest.latest() if manifest else None
        n = _next_version(model_dir, manifest)

        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}staging-", dir=root))
        try:
            smodel = staging / model
            sver = smodel / str(n)
            sver.mkdir(parents=True)
            entries = [copy_hashed(src, sver / rel, rel) for src, rel in files]
            cfg = _resolve_config(model, model_dir, config, sver, n, prev_latest)
            text = config_to_text(cfg)
            # Reparse what will be written: the file on disk is what Triton reads.
            cfg = parse_config_text(text, str(model_dir / CONFIG_NAME))
            (smodel / CONFIG_NAME).write_text(text, encoding="utf-8")
            existing = version_dirs_of(model_dir) if model_dir.is_dir() else []
            known = {p.name for p in root.iterdir() if p.is_dir() and (p / CONFIG_NAME).exists()} | {model}
            problems = check_config(
                cfg,
                smodel / CONFIG_NAME,
                text,
                model_name=model,
                version_dirs=[*existing, sver],
                known_models=known,
            )
            _raise_problems(model, problems, staging, root)

            entry = VersionEntry(n, entries, source=dict(source or {}), metadata=dict(metadata or {}))
            manifest = manifest or ModelManifest(model)
            manifest.versions[n] = entry
            manifest.config_sha256 = sha256_bytes(text.encode())
            _commit(model_dir, smodel, n, text, manifest)
            write_index(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("added %s version %s (%s files, %s bytes)", model, n, len(entries), entry.size)
    return entry


# The runtimes `repo add --runtime` offers (a TensorRT plan comes from `convert`), and how each is served.
RUNTIMES = {r.value: _describe(*MODEL_RUNTIMES[r]) for r in (Runtime.onnxruntime, Runtime.onnxruntime_python)}


def _served_by(cfg: mc.ModelConfig) -> str:
    return _describe(cfg.platform, cfg.backend)


def add_onnx_version(
    root: Path,
    model: str,
    files_from: Path,
    *,
    runtime: str,
    config: Path | None = None,
) -> VersionEntry:
    """``repo add --runtime``: a user's ONNX model laid out and configured as ``convert`` does.

    ``onnxruntime``: model.onnx under ``platform: "onnxruntime_onnx"``. ``onnxruntime-python``:
    model.onnx plus convert's generated model.py under ``backend: "python"`` (the local stack's
    Triton has only the python backend). ``files_from`` is an .onnx file, or a folder holding
    model.onnx (its other files are copied too). Then :func:`add_version`.
    """
    # The layout and model.py are the ones convert writes (repo/version_folder.py), reused, not copied.
    from tritonops.repo.version_folder import ONNX_FILE, stage_version

    if runtime not in RUNTIMES:
        raise RepositoryError(f"--runtime: unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    files_from = Path(files_from)
    onnx_file = files_from / ONNX_FILE if files_from.is_dir() else files_from
    if not onnx_file.is_file() or onnx_file.suffix != ".onnx":
        raise RepositoryError(
            f"{files_from}: --runtime {runtime} needs an .onnx file, or a folder with {ONNX_FILE}"
        )
    existing = Path(root) / model / CONFIG_NAME
    cfg: mc.ModelConfig | Path | None = config
    if config is None and existing.is_file():
        current = read_config(existing)
        if _served_by(current) != RUNTIMES[runtime]:
            raise RepositoryError(
                f"{existing}: {model} is served by {_served_by(current)}, not {RUNTIMES[runtime]} "
                f"(--runtime {runtime}); pass --config to change it"
            )
    elif config is None:
        cfg = generate_onnx_config(model, onnx_file, runtime)
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}runtime-") as tmp:
        folder = Path(tmp) / model
        if files_from.is_dir():
            shutil.copytree(files_from, folder, ignore=shutil.ignore_patterns(ONNX_FILE))
        stage_version(folder, onnx_file, runtime)
        return add_version(root, model, folder, config=cfg)


def _sweep_staging(root: Path) -> None:
    """Remove staging folders of writers that died (SIGKILL, power loss): we hold the only lock."""
    for p in root.glob(f"{STAGING_PREFIX}staging-*"):
        log.info("removing %s, left by an interrupted writer", p)
        shutil.rmtree(p, ignore_errors=True)


def _commit(model_dir: Path, smodel: Path, n: int, text: str, manifest: ModelManifest) -> None:
    if not model_dir.exists() or not any(model_dir.iterdir()):
        # A new model: one rename makes it appear whole.
        manifest.save(smodel / MANIFEST_NAME)
        if model_dir.exists():
            model_dir.rmdir()
        os.rename(smodel, model_dir)
        return
    # Version files first, then the small files pointing at them (config, then manifest).
    old_config = (model_dir / CONFIG_NAME).read_bytes() if (model_dir / CONFIG_NAME).exists() else None
    os.rename(smodel / str(n), model_dir / str(n))
    try:
        atomic_write_bytes(model_dir / CONFIG_NAME, text.encode())
        manifest.save(model_dir / MANIFEST_NAME)
    except BaseException:
        shutil.rmtree(model_dir / str(n), ignore_errors=True)
        if old_config is not None:
            atomic_write_bytes(model_dir / CONFIG_NAME, old_config)
        raise


def set_version_metadata(root: Path, model: str, version: int, key: str, value: Any) -> None:
    """Record free-form metadata (accuracy, measured memory, ...) on a version; digests do not change."""
    root = Path(root)
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise RepositoryError(
            f"{model} version {version}: metadata {key!r} is not JSON-serialisable ({e})"
        ) from None
    with repo_lock(root):
        mpath = root / model / MANIFEST_NAME
        man = ModelManifest.load(mpath)
        if version not in man.versions:
            raise RepositoryError(f"{mpath}: model {model!r} has no version {version}")
        man.versions[version].metadata[key] = value
        man.save(mpath)


def _config_or_none(path: Path) -> mc.ModelConfig | None:
    try:
        return read_config(path)
    except RepositoryError:
        return None


def list_repository(root: Path) -> list[dict[str, Any]]:
    """Per model: backend, live versions, digest, and each version's size, digest and creation time."""
    root = Path(root)
    if not root.is_dir():
        raise RepositoryError(f"{root}: repository folder does not exist")
    out = []
    for md in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(STAGING_PREFIX)):
        mpath = md / MANIFEST_NAME
        if not mpath.exists():
            continue
        man = ModelManifest.load(mpath)
        cfg = _config_or_none(md / CONFIG_NAME)
        out.append(
            {
                "model": man.model,
                "platform": cfg.platform if cfg else None,
                "backend": (cfg.backend or None) if cfg else None,
                "digest": man.digest,
                "live_versions": live_versions(cfg, list(man.versions)),
                "size": sum(v.size for v in man.versions.values()),
                "versions": [
                    {
                        "version": n,
                        "size": v.size,
                        "digest": v.digest,
                        "files": len(v.files),
                        "created": v.created,
                        "metadata": v.metadata,
                    }
                    for n, v in sorted(man.versions.items())
                ],
            }
        )
    return out


def prune_repository(root: Path, keep: int, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove all but the ``keep`` newest versions per model, never a live (version_policy) or pinned one.

    Only versions recorded in a manifest (created by tritonops) are touched. A version counts as
    pinned when its metadata has ``"pinned": true``. Each removed folder is first renamed into
    staging (atomic), the manifest and index are rewritten, then the files are deleted.
    """
    root = Path(root)
    if keep < 1:
        raise RepositoryError(f"--keep: {keep} (must be >= 1; prune never removes every version)")
    removed: list[dict[str, Any]] = []
    with repo_lock(root):
        for md in sorted(
            p
            for p in root.iterdir()
            if p.is_dir() and (p / MANIFEST_NAME).exists() and not p.name.startswith(STAGING_PREFIX)
        ):
            man = ModelManifest.load(md / MANIFEST_NAME)
            versions = sorted(man.versions)
            live = set(live_versions(_config_or_none(md / CONFIG_NAME), versions))
            pinned = {n for n, v in man.versions.items() if v.metadata.get("pinned") is True}
            kept = set(versions[-keep:]) | live | pinned
            gone = [n for n in versions if n not in kept]
            if not gone:
                continue
            for n in gone:
                removed.append(
                    {
                        "model": man.model,
                        "version": n,
                        "size": man.versions[n].size,
                        "digest": man.versions[n].digest,
                    }
                )
            if dry_run:
                continue
            trash = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}trash-", dir=root))
            try:
                for n in gone:
                    if (md / str(n)).exists():
                        os.rename(md / str(n), trash / str(n))
                    del man.versions[n]
                man.save(md / MANIFEST_NAME)
            except BaseException:
                for n in gone:  # put back what was moved
                    if (trash / str(n)).exists():
                        os.rename(trash / str(n), md / str(n))
                raise
            finally:
                pass
            shutil.rmtree(trash, ignore_errors=True)
        if removed and not dry_run:
            write_index(root)
    return removed


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
