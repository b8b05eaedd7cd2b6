"""Publish a local model repository to a region's bucket: incremental, atomic, residency-aware.

The bucket prefix mirrors the local layout (see :mod:`tritonops.repo.manifest`)::

    <prefix>/tritonops-index.json             written last: what tritonops has published here
    <prefix>/<model>/config.pbtxt              version_policy lists only complete versions
    <prefix>/<model>/tritonops-manifest.json   every published version's files and sha256s
    <prefix>/<model>/<N>/...                   version files, each with x-amz-meta-sha256

Change detection costs one GET of the remote index; a model whose digest differs costs one more
GET (its manifest). No LIST or HEAD per object unless the remote state is missing or cannot be
trusted, and then the fallback (LIST + HEAD for sha256 metadata) is reported.

Publish order, per region (a SIGKILL anywhere leaves nothing incomplete loadable):

1. version files (each PUT carries Content-MD5, and the sha256 of the bytes sent is compared with
   the manifest before anything points at them);
2. per model: ``config.pbtxt`` whose version_policy names only complete versions, then the model
   manifest;
3. the index;
4. only then, with ``--prune``, deletions of keys tritonops published and the local repository no
   longer has: a model's config first (so nothing can load it), then its files, then its manifest,
   then the index again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tritonops.config import Config, ReleaseMode
from tritonops.errors import PlanError, RepositoryError, ResidencyError, StoreError
from tritonops.release.pointer import publish_release
from tritonops.repo.manifest import (
    CONFIG_NAME,
    INDEX_NAME,
    MANIFEST_NAME,
    ModelManifest,
    RepoIndex,
    VersionEntry,
    load_model_manifests,
    sha256_bytes,
)
from tritonops.store import open_store
from tritonops.store.base import ObjectInfo, ObjectStore, check_key

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_MAX_DELETE_FRACTION = 0.25
DEFAULT_WORKERS = 16
# Test hook: SIGKILL this process after this many object writes (proves the publish order).
KILL_AFTER_PUTS_ENV = "TRITONOPS_TEST_KILL_AFTER_PUTS"


class SyncProgress(Protocol):
    """Progress sink (the CLI's rich bar on a TTY); the engine calls it from worker threads."""

    def start(self, region: str, total_files: int, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_done(self) -> None: ...

    def finish(self) -> None: ...


@dataclass
class SyncOptions:
    dry_run: bool = False
    prune: bool = False
    max_delete: int | None = None  # None: DEFAULT_MAX_DELETE_FRACTION of the region's published files
    force: bool = False
    verify: bool = False
    models: list[str] | None = None  # only these models (residency is then an error, not a skip)
    workers: int = DEFAULT_WORKERS


@dataclass(frozen=True)
class Upload:
    key: str
    path: Path
    size: int
    sha256: str
    model: str
    version: int


@dataclass
class ModelPlan:
    model: str
    local: ModelManifest
    remote: ModelManifest | None
    uploads: list[Upload] = field(default_factory=list)
    skipped_files: int = 0
    new_versions: list[int] = field(default_factory=list)
    changed_versions: list[int] = field(default_factory=list)
    prune_versions: list[int] = field(default_factory=list)
    # What the bucket holds after step 2 (prune-pending versions still listed) and after prune.
    target: ModelManifest | None = None
    final: ModelManifest | None = None
    config_bytes: bytes = b""
    write_config: bool = False
    write_manifest: bool = False
    fallback: str | None = None

    @property
    def touched(self) -> bool:
        return bool(self.uploads or self.write_config or self.write_manifest or self.prune_versions)


@dataclass
class RegionPlan:
    region: str
    url: str
    models: list[ModelPlan] = field(default_factory=list)
    unchanged_models: list[str] = field(default_factory=list)
    residency_skipped: list[str] = field(default_factory=list)
    prune_models: dict[str, ModelManifest] = field(default_factory=dict)
    remote_index: RepoIndex | None = None
    new_index: RepoIndex | None = None
    final_index: RepoIndex | None = None
    notes: list[str] = field(default_factory=list)
    skipped_files: int = 0
    published_files_before: int = 0

    @property
    def uploads(self) -> list[Upload]:
        return [u for m in self.models for u in m.uploads]

    def pointer_writes(self) -> list[int]:
        """Sizes of the small objects this plan writes (configs, manifests, index)."""
        sizes: list[int] = []
        for m in self.models:
            assert m.target is not None and m.final is not None
            if m.write_config:
                sizes.append(len(m.config_bytes))
            if m.write_manifest:
                sizes.append(len(m.target.dumps()))
            if m.prune_versions:  # manifest rewritten after the prune
                sizes.append(len(m.final.dumps()))
        if self.new_index is not None and self.new_index.dumps() != _index_bytes_or_none(self.remote_index):
            sizes.append(len(self.new_index.dumps()))
        if self.final_index is not None and self.delete_keys():
            sizes.append(len(self.final_index.dumps()))
        return sizes

    def delete_keys(self) -> list[str]:
        keys: list[str] = []
        for mp in self.models:
            assert mp.target is not None
            for n in mp.prune_versions:
                keys += [f"{mp.model}/{n}/{f.path}" for f in mp.target.versions[n].files]
        for model, man in sorted(self.prune_models.items()):
            keys += _model_keys(model, man)
        return keys


@dataclass
class SyncSummary:
    region: str
    url: str
    dry_run: bool
    uploaded_files: int
    uploaded_bytes: int
    skipped_files: int
    deleted_files: int
    seconds: float
    models_published: list[str]
    models_unchanged: int
    residency_skipped: list[str]
    models_pruned: list[str]
    versions_pruned: dict[str, list[int]]
    notes: list[str]
    verified_files: int | None = None
    deletes: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.uploaded_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "region": self.region,
            "url": self.url,
            "dry_run": self.dry_run,
            "uploaded_files": self.uploaded_files,
            "uploaded_bytes": self.uploaded_bytes,
            "skipped_files": self.skipped_files,
            "deleted_files": self.deleted_files,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.mb_per_s, 1),
            "models_published": self.models_published,
            "models_unchanged": self.models_unchanged,
            "residency_skipped": self.residency_skipped,
            "models_pruned": self.models_pruned,
            "versions_pruned": {m: v for m, v in sorted(self.versions_pruned.items())},
            "deletes": self.deletes,
            "verified_files": self.verified_files,
            "notes": self.notes,
        }


# -- helpers ----------------------------------------------------------------------------------


def _index_bytes_or_none(index: RepoIndex | None) -> bytes | None:
    return None if index is None else index.dumps()


def _model_keys(model: str, man: ModelManifest) -> list[str]:
    """Every key a model manifest accounts for, config first and manifest last (the delete order)."""
    keys = [f"{model}/{CONFIG_NAME}"]
    for n in sorted(man.versions):
        keys += [f"{model}/{n}/{f.path}" for f in man.versions[n].files]
    return keys + [f"{model}/{MANIFEST_NAME}"]


def _index_entry(man: ModelManifest) -> dict[str, Any]:
    return {"digest": man.digest, "versions": {str(n): man.versions[n].digest for n in sorted(man.versions)}}


def _check_remote_manifest_keys(man: ModelManifest, source: str) -> None:
    """A remote manifest is untrusted input: it must not steer reads or deletes outside the prefix."""
    check_key(man.model, source)
    if "/" in man.model:
        raise StoreError(f"{source}: model name {man.model!r} is outside the repository prefix")
    for n, v in man.versions.items():
        for f in v.files:
            check_key(f"{man.model}/{n}/{f.path}", source)


def published_config(
    config_text: str, versions: list[int], source: str, exact: list[int] | None = None
) -> bytes:
    """The local config with its version_policy rewritten to ``specific`` over ``versions``.

    The local policy is kept as intent: ``latest {k}`` keeps the k highest complete versions,
    ``specific`` keeps those of its list that are complete, ``all`` keeps every complete version.
    The result only ever names versions present in the bucket. ``exact``: the region's release
    pointer (tritonops.release), named as is instead of the local policy.
    """
    from tritonops.repo.pbtxt import config_to_text, parse_config_text

    cfg = parse_config_text(config_text, source)
    have = sorted(versions)
    choice = cfg.version_policy.WhichOneof("policy_choice")
    if choice == "all":
        keep = have
    elif choice == "specific":
        wanted = set(cfg.version_policy.specific.versions)
        keep = [n for n in have if n in wanted]
    else:  # latest, or no policy (Triton's default is latest 1)
        k = cfg.version_policy.latest.num_versions if choice == "latest" else 1
        keep = have[-max(k, 1) :] if have else []
    cfg.ClearField("version_policy")
    cfg.version_policy.specific.SetInParent()
    if exact is not None:
        keep = [n for n in sorted(exact) if n in have]
    cfg.version_policy.specific.versions.extend(keep)
    return config_to_text(cfg).encode()


def validate_local(root: Path, models: Collection[str] | None = None) -> list[ModelManifest]:
    """Refuse to publish what ``tritonops repo validate`` rejects; returns the manifests.

    ``models``: check only these (the ones about to be published) plus the index; None checks all.
    """
    from tritonops.repo.validate import validate_repository

    problems = validate_repository(root, models)
    if problems:
        more = f" (and {len(problems) - 1} more; run `tritonops repo validate`)" if len(problems) > 1 else ""
        raise RepositoryError(f"refusing to publish an invalid repository: {problems[0]}{more}")
    return load_model_manifests(root)


def load_local(root: Path) -> list[ModelManifest]:
    """The local manifests, with the repository-level checks only (index and manifests readable).

    The per-model checks run in ``sync_region`` on the models a region is about to receive.
    """
    return validate_local(root, models=())


class _PutCounter:
    """Counts object writes; with the test hook set, SIGKILLs the process after K of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n = 0
        raw = os.environ.get(KILL_AFTER_PUTS_ENV)
        self.kill_after = int(raw) if raw else None

    def tick(self) -> None:
        with self._lock:
            self.n += 1
            if self.kill_after is not None and self.n >= self.kill_after:
                log.warning(
                    "%s=%s: killing myself after %s writes", KILL_AFTER_PUTS_ENV, self.kill_after, self.n
                )
                os.kill(os.getpid(), signal.SIGKILL)


# -- planning ---------------------------------------------------------------------------------


def _load_remote_index(store: ObjectStore, notes: list[str]) -> RepoIndex | None:
    raw = store.get(INDEX_NAME)
    if raw is None:
        return None
    try:
        return RepoIndex.loads(raw, f"{store.url}/{INDEX_NAME}")
    except RepositoryError as e:
        notes.append(f"remote index untrusted ({e}); falling back to listing")
        return None


def _load_remote_manifest(
    store: ObjectStore, model: str, raw: bytes | None
) -> tuple[ModelManifest | None, str]:
    """(manifest, why-not). Raises StoreError if it names keys outside the prefix."""
    source = f"{store.url}/{model}/{MANIFEST_NAME}"
    if raw is None:
        return None, "remote manifest missing"
    try:
        man = ModelManifest.loads(raw, source)
    except RepositoryError as e:
        return None, f"remote manifest unreadable ({str(e).split(': ', 1)[-1]})"
    _check_remote_manifest_keys(man, source)
    if man.model != model:
        return None, f"remote manifest names model {man.model!r}"
    return man, ""


def _plan_model(
    mp: ModelPlan,
    store: ObjectStore,
    root: Path,
    opts: SyncOptions,
    listing: dict[str, ObjectInfo] | None,
    pool: ThreadPoolExecutor,
    mode: ReleaseMode = ReleaseMode.on_publish,
) -> None:
    """Fill ``mp``: what to upload, skip, withdraw and prune for one local model."""
    local, remote, model = mp.local, mp.remote, mp.model
    mdir = root / model
    published: dict[int, VersionEntry] = {}
    # Releases (tritonops.release): the region's live pointer is not the local repository's to move.
    release = publish_release(store, mode, model, remote is not None)

    if remote is None:
        # No trusted manifest: what is there already is proven by size + sha256 metadata only.
        need_head = []
        for n, v in sorted(local.versions.items()):
            for f in v.files:
                key = f"{model}/{n}/{f.path}"
                o = listing.get(key) if listing is not None else None
                if o is not None and o.size == f.size:
                    need_head.append((key, f.sha256))
        heads = dict(
            zip([k for k, _ in need_head], pool.map(store.head, [k for k, _ in need_head]), strict=True)
        )
        for n, v in sorted(local.versions.items()):
            for f in v.files:
                key = f"{model}/{n}/{f.path}"
                info = heads.get(key)
                if info is not None and info.sha256 == f.sha256 and info.size == f.size:
                    mp.skipped_files += 1
                else:
                    mp.uploads.append(Upload(key, mdir / str(n) / f.path, f.size, f.sha256, model, n))
            mp.new_versions.append(n)
            published[n] = v
        mp.write_config = mp.write_manifest = True
    else:
        for n, v in sorted(local.versions.items()):
            rv = remote.versions.get(n)
            if rv is not None and rv.digest == v.digest:
                mp.skipped_files += len(v.files)
                published[n] = v
                continue
            if rv is not None:
                mp.changed_versions.append(n)
            else:
                mp.new_versions.append(n)
            have = {f.path: f for f in rv.files} if rv is not None else {}
            for f in v.files:
                old = have.get(f.path)
                if old is not None and old.sha256 == f.sha256 and old.size == f.size:
                    mp.skipped_files += 1
                else:
                    key = f"{model}/{n}/{f.path}"
                    mp.uploads.append(Upload(key, mdir / str(n) / f.path, f.size, f.sha256, model, n))
            published[n] = v
        for n in sorted(set(remote.versions) - set(local.versions)):
            if opts.prune and n not in release.protected:  # never the live or rollback version
                mp.prune_versions.append(n)
            published[n] = remote.versions[n]  # retained (or prune-pending until step 4)

    config_sha = local.config_sha256
    mp.target = ModelManifest(model, dict(sorted(published.items())), config_sha)
    live = sorted(set(published) - set(mp.prune_versions))
    mp.final = ModelManifest(model, {n: published[n] for n in live}, config_sha)
    text = (mdir / CONFIG_NAME).read_text(encoding="utf-8")
    mp.config_bytes = published_config(text, live, str(mdir / CONFIG_NAME), release.pointer(mp.final))
    if remote is not None:
        remote_live_set = sorted(remote.versions)
        mp.write_config = bool(
            mp.new_versions or mp.changed_versions or mp.prune_versions
            or remote.config_sha256 != config_sha or remote_live_set != live
        )  # fmt: skip
        mp.write_manifest = mp.target.dumps() != remote.dumps()


def plan_region(
    cfg: Config, region: str, manifests: list[ModelManifest], opts: SyncOptions, store: ObjectStore
) -> RegionPlan:
    """Compare the local manifests with the bucket; reads only (GET index, GET changed manifests)."""
    root = cfg.repository_path
    plan = RegionPlan(region, store.url)
    local = {m.model: m for m in manifests}
    if opts.models is not None:
        missing = [m for m in opts.models if m not in local]
        if missing:
            raise RepositoryError(f"{root}: model {missing[0]!r} is not in the local repository")
        for m in opts.models:
            if not cfg.is_allowed(m, region):
                raise ResidencyError(
                    f"model {m!r} is not allowed in region {region!r} "
                    f"(models.{m}.regions: {', '.join(cfg.allowed_regions(m)) or 'none'})"
                )
        local = {m: local[m] for m in opts.models}
    allowed = {m: man for m, man in local.items() if cfg.is_allowed(m, region)}
    plan.residency_skipped = sorted(set(local) - set(allowed))
    for m in plan.residency_skipped:
        log.info("region %s: skipping model %s (residency: not allowed here)", region, m)

    remote_index = _load_remote_index(store, plan.notes)
    plan.remote_index = remote_index
    listing: dict[str, ObjectInfo] | None = None
    if remote_index is None:
        # First sync, a lost index or an untrusted one: one LIST of the prefix tells what is there.
        listing = {o.key: o for o in store.list("")}
        if listing:
            plan.notes.append(
                f"no trusted remote index at {store.url}/{INDEX_NAME}: listed {len(listing)} objects "
                "and verified sha256 metadata instead"
            )
        remote_models = {k.split("/", 1)[0] for k in listing if k.endswith("/" + MANIFEST_NAME)}
    else:
        remote_models = set(remote_index.models)

    with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-plan") as pool:
        # Which remote manifests to read: changed models, models absent from the index (a sync
        # killed between manifest and index), and with --prune every remote model to delete.
        to_get: list[str] = []
        for m, man in sorted(allowed.items()):
            if remote_index is not None and remote_index.models.get(m, {}).get("digest") == man.digest:
                plan.unchanged_models.append(m)
                plan.skipped_files += sum(len(v.files) for v in man.versions.values())
                continue
            to_get.append(m)
        prune_candidates: list[str] = []
        if opts.prune and opts.models is None:
            prune_candidates = sorted(remote_models - set(allowed))
        names = to_get + prune_candidates
        if remote_index is None:
            raws = [store.get(f"{m}/{MANIFEST_NAME}") if m in remote_models else None for m in names]
        else:
            raws = list(pool.map(lambda m: store.get(f"{m}/{MANIFEST_NAME}"), names))
        fetched = dict(zip(names, raws, strict=True))

        for m in to_get:
            remote, why = _load_remote_manifest(store, m, fetched[m])
            in_index = remote_index is not None and m in remote_index.models
            if remote is not None and in_index and remote.digest != remote_index.models[m]["digest"]:  # type: ignore[union-attr]
                remote, why = None, "remote manifest does not match the remote index"
            if remote is not None and listing is not None:
                missing = [k for k in _model_keys(m, remote)[1:-1] if k not in listing]
                if missing:
                    remote, why = None, f"remote manifest lists {len(missing)} missing objects"
            mp = ModelPlan(m, allowed[m], remote)
            if remote is None and (in_index or fetched[m] is not None):
                mp.fallback = why
                plan.notes.append(f"model {m}: {why}; listing and verifying its objects instead")
                model_listing = listing if listing is not None else {o.key: o for o in store.list(f"{m}/")}
                _plan_model(mp, store, root, opts, model_listing, pool, cfg.release.mode)
            else:
                _plan_model(mp, store, root, opts, listing, pool, cfg.release.mode)
            plan.models.append(mp)
            plan.skipped_files += mp.skipped_files

        for m in prune_candidates:
            remote, why = _load_remote_manifest(store, m, fetched[m])
            if remote is None:
                plan.notes.append(
                    f"model {m}: not pruned ({why}; cannot tell which keys tritonops published)"
                )
                continue
            plan.prune_models[m] = remote

    # The index after step 3 and after the prune: every model tritonops keeps published here.
    entries: dict[str, dict[str, Any]] = dict(remote_index.models) if remote_index is not None else {}
    for mp in plan.models:
        assert mp.target is not None
        entries[mp.model] = _index_entry(mp.target)
    plan.new_index = RepoIndex(dict(sorted(entries.items())))
    final = dict(entries)
    for mp in plan.models:
        assert mp.final is not None
        final[mp.model] = _index_entry(mp.final)
    for m in plan.prune_models:
        final.pop(m, None)
    plan.final_index = RepoIndex(dict(sorted(final.items())))

    # Files published in the region before this sync, for the prune guard.
    before = sum(len(v.files) for m in plan.unchanged_models for v in allowed[m].versions.values())
    before += sum(
        len(v.files) for mp in plan.models if mp.remote is not None for v in mp.remote.versions.values()
    )
    before += sum(len(v.files) for man in plan.prune_models.values() for v in man.versions.values())
    # ... plus each model's config and manifest: deletes count them too.
    before += 2 * (
        len(plan.unchanged_models) + sum(1 for mp in plan.models if mp.remote) + len(plan.prune_models)
    )
    plan.published_files_before = before
    plan.models.sort(key=lambda p: p.model)
    return plan


def check_plan(plan: RegionPlan, opts: SyncOptions) -> None:
    """Safety lives on the plan: immutable versions, and the prune guard."""
    for mp in plan.models:
        if mp.changed_versions and not opts.force:
            n = mp.changed_versions[0]
            raise PlanError(
                f"region {plan.region}: model {mp.model!r} version {n}: local files differ from the "
                "published version (published versions are immutable: add a new version, "
                "or pass --force to replace it)"
            )
    deletes = plan.delete_keys()
    if not deletes:
        return
    limit = opts.max_delete
    if limit is None:
        limit = max(1, int(plan.published_files_before * DEFAULT_MAX_DELETE_FRACTION))
    if len(deletes) > limit and not opts.force:
        raise PlanError(
            f"region {plan.region}: --prune would delete {len(deletes)} of the "
            f"{plan.published_files_before} objects tritonops published (limit {limit}, --max-delete); "
            "pass --force to delete them anyway"
        )


# -- applying ---------------------------------------------------------------------------------


def _run_parallel(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """Map ``fn`` over ``items``; on the first error cancel what has not started and raise it."""
    futures = [pool.submit(fn, it) for it in items]
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    for f in pending:
        f.cancel()
    for f in futures:
        if f.done() and not f.cancelled() and f.exception() is not None:
            wait([p for p in pending if not p.cancelled()])
            raise f.exception()  # type: ignore[misc]
    return [f.result() for f in futures]


def _upload_all(
    store: ObjectStore,
    plan: RegionPlan,
    pool: ThreadPoolExecutor,
    counter: _PutCounter,
    progress: SyncProgress | None,
) -> None:
    def one(u: Upload) -> None:
        digest = store.put_file(u.key, str(u.path), u.size, u.sha256, progress.advance if progress else None)
        if digest != u.sha256:
            raise RepositoryError(
                f"{u.path}: model {u.model!r} version {u.version}: sha256 {digest[:12]}... differs from the "
                f"manifest ({u.sha256[:12]}...); the file changed during sync: nothing points at it, rerun"
            )
        counter.tick()
        if progress:
            progress.file_done()

    # Largest first: a big multipart upload starts early and overlaps the many small ones.
    _run_parallel(pool, one, sorted(plan.uploads, key=lambda u: -u.size))


def _put_pointer(store: ObjectStore, key: str, data: bytes, counter: _PutCounter) -> None:
    store.put_bytes(key, data, sha256_bytes(data))
    counter.tick()


def _withdraw_changed(store: ObjectStore, plan: RegionPlan, root: Path, counter: _PutCounter) -> None:
    """--force on a changed version: unpublish it (config + manifest) before replacing its files."""
    for mp in plan.models:
        if not mp.changed_versions or mp.remote is None:
            continue
        keep = {n: v for n, v in mp.remote.versions.items() if n not in mp.changed_versions}
        text = (root / mp.model / CONFIG_NAME).read_text(encoding="utf-8")
        cfg_bytes = published_config(text, sorted(keep), str(root / mp.model / CONFIG_NAME))
        _put_pointer(store, f"{mp.model}/{CONFIG_NAME}", cfg_bytes, counter)
        _put_pointer(
            store,
            f"{mp.model}/{MANIFEST_NAME}",
            ModelManifest(mp.model, keep, mp.remote.config_sha256).dumps(),
            counter,
        )


def verify_region(
    store: ObjectStore, index: RepoIndex, manifests: dict[str, ModelManifest], pool: ThreadPoolExecutor
) -> int:
    """Download and hash every object the manifests list; raise StoreError naming the first mismatch.

    Also checks each config's sha256 metadata and that its version_policy names only listed
    versions. Returns the number of objects checked.
    """
    from tritonops.repo.pbtxt import parse_config_text

    jobs: list[tuple[str, str, int]] = []
    for m in sorted(index.models):
        man = manifests.get(m)
        if man is None:
            continue
        for n in sorted(man.versions):
            jobs += [(f"{m}/{n}/{f.path}", f.sha256, f.size) for f in man.versions[n].files]

    def check(job: tuple[str, str, int]) -> str | None:
        key, sha, size = job
        info = store.head(key)
        if info is None:
            return f"{store.url}/{key}: missing"
        data = store.get(key)
        if data is None:
            return f"{store.url}/{key}: missing"
        actual = hashlib.sha256(data).hexdigest()
        if len(data) != size or actual != sha:
            return f"{store.url}/{key}: sha256 {actual[:12]}... differs from the manifest ({sha[:12]}...)"
        if info.sha256 is not None and info.sha256 != sha:
            return f"{store.url}/{key}: sha256 metadata {info.sha256[:12]}... differs from the manifest"
        return None

    problems = [p for p in pool.map(check, jobs) if p]
    for m in sorted(index.models):
        man = manifests.get(m)
        if man is None:
            continue
        key = f"{m}/{CONFIG_NAME}"
        info = store.head(key)
        data = store.get(key)
        if data is None or info is None:
            problems.append(f"{store.url}/{key}: missing")
            continue
        if info.sha256 is not None and info.sha256 != sha256_bytes(data):
            problems.append(f"{store.url}/{key}: bytes differ from their sha256 metadata")
            continue
        cfg = parse_config_text(data.decode("utf-8", "replace"), f"{store.url}/{key}")
        listed = set(cfg.version_policy.specific.versions)
        if cfg.version_policy.WhichOneof("policy_choice") != "specific" or not listed <= set(man.versions):
            problems.append(f"{store.url}/{key}: version_policy names versions that are not published")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreError(f"verify failed: {problems[0]}{more}")
    return len(jobs) + len(manifests)


def _remote_manifests_for_verify(
    store: ObjectStore, plan: RegionPlan, local: dict[str, ModelManifest], pool: ThreadPoolExecutor
) -> dict[str, ModelManifest]:
    """The manifests of everything in the final index: from the plan where known, else GET them."""
    assert plan.final_index is not None
    known: dict[str, ModelManifest] = {}
    for mp in plan.models:
        assert mp.final is not None
        known[mp.model] = mp.final
    for m in plan.unchanged_models:
        known[m] = local[m]
    rest = [m for m in plan.final_index.models if m not in known]
    for m, raw in zip(rest, pool.map(lambda m: store.get(f"{m}/{MANIFEST_NAME}"), rest), strict=True):
        man, why = _load_remote_manifest(store, m, raw)
        if man is None:
            raise StoreError(f"verify failed: model {m}: {why}")
        known[m] = man
    return known


def sync_region(
    cfg: Config,
    region: str,
    opts: SyncOptions,
    manifests: list[ModelManifest] | None = None,
    progress: SyncProgress | None = None,
    store: ObjectStore | None = None,
) -> SyncSummary:
    """Publish the local repository to one region. See the module docstring for the order."""
    t0 = time.monotonic()
    rcfg = cfg.region(region)
    root = cfg.repository_path
    if manifests is None:
        manifests = load_local(root)
    own_store = store is None
    st = store or open_store(rcfg, region, max_workers=opts.workers)
    try:
        st.check()
        plan = plan_region(cfg, region, manifests, opts, st)
        check_plan(plan, opts)
        touched = [m.model for m in plan.models if m.touched]
        if touched:
            # Never publish what `repo validate` rejects; bytes not being sent need no re-hash.
            validate_local(root, touched)
        deletes = plan.delete_keys()
        uploads = plan.uploads
        up_bytes = sum(u.size for u in uploads)
        pointers = plan.pointer_writes()
        summary = SyncSummary(
            region=region, url=st.url, dry_run=opts.dry_run,
            uploaded_files=len(uploads) + len(pointers),
            uploaded_bytes=up_bytes + sum(pointers),
            skipped_files=plan.skipped_files, deleted_files=len(deletes), seconds=0.0,
            models_published=[m.model for m in plan.models if m.touched],
            models_unchanged=len(plan.unchanged_models),
            residency_skipped=plan.residency_skipped,
            models_pruned=sorted(plan.prune_models),
            versions_pruned={m.model: m.prune_versions for m in plan.models if m.prune_versions},
            notes=plan.notes, deletes=deletes,
        )  # fmt: skip
        if opts.dry_run:
            summary.seconds = time.monotonic() - t0
            return summary
        _apply(st, plan, root, opts, progress, {m.model: m for m in manifests})
        summary.seconds = time.monotonic() - t0
        if opts.verify:
            with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-verify") as pool:
                assert plan.final_index is not None
                mans = _remote_manifests_for_verify(st, plan, {m.model: m for m in manifests}, pool)
                summary.verified_files = verify_region(st, plan.final_index, mans, pool)
        return summary
    finally:
        if own_store:
            st.close()


def _apply(
    st: ObjectStore,
    plan: RegionPlan,
    root: Path,
    opts: SyncOptions,
    progress: SyncProgress | None,
    local: dict[str, ModelManifest],
) -> None:
    counter = _PutCounter()
    uploads = plan.uploads
    if progress is not None and uploads:
        progress.start(plan.region, len(uploads), sum(u.size for u in uploads))
    try:
        with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-put") as pool:
            # 0. --force: withdraw changed versions before their files are replaced.
            _withdraw_changed(st, plan, root, counter)
            # 1. version files, verified.
            _upload_all(st, plan, pool, counter, progress)

            # 2. per model: config (complete versions only), then manifest.
            def pointers(mp: ModelPlan) -> None:
                assert mp.target is not None
                if mp.write_config:
                    _put_pointer(st, f"{mp.model}/{CONFIG_NAME}", mp.config_bytes, counter)
                if mp.write_manifest:
                    _put_pointer(st, f"{mp.model}/{MANIFEST_NAME}", mp.target.dumps(), counter)

            _run_parallel(pool, pointers, plan.models)
            # 3. the index, last.
            assert plan.new_index is not None and plan.final_index is not None
            new_index_bytes = plan.new_index.dumps()
            if new_index_bytes != _index_bytes_or_none(plan.remote_index):
                _put_pointer(st, INDEX_NAME, new_index_bytes, counter)
            # 4. prune, only after the new state is up and (with deletes pending) verified.
            deletes = plan.delete_keys()
            if not deletes:
                return
            mans = {mp.model: mp.target for mp in plan.models if mp.target is not None}
            verify_region(st, RepoIndex({m: {} for m in mans}), mans, pool)
            for mp in plan.models:
                if not mp.prune_versions:
                    continue
                assert mp.target is not None and mp.final is not None
                st.delete(
                    f"{mp.model}/{n}/{f.path}" for n in mp.prune_versions for f in mp.target.versions[n].files
                )
                _put_pointer(st, f"{mp.model}/{MANIFEST_NAME}", mp.final.dumps(), counter)
            for m, man in sorted(plan.prune_models.items()):
                keys = _model_keys(m, man)
                st.delete(keys[:1])  # config first: nothing can load the model any more
                st.delete(keys[1:-1])
                st.delete(keys[-1:])
            _put_pointer(st, INDEX_NAME, plan.final_index.dumps(), counter)
    finally:
        if progress is not None and uploads:
            progress.finish()


def sync(
    cfg: Config,
    regions: list[str],
    opts: SyncOptions,
    progress: SyncProgress | None = None,
    on_summary: Callable[[SyncSummary], None] | None = None,
) -> list[SyncSummary]:
    """Publish the repository to each region in turn. Stops at the first error."""
    for r in regions:
        cfg.region(r)  # unknown region: one line before anything happens
    if not regions:
        raise PlanError("no region to sync (pass --region or --all-regions; none configured?)")
    manifests = load_local(cfg.repository_path)
    if not manifests:
        raise RepositoryError(f"{cfg.repository_path}: no model to publish (empty repository)")
    out = []
    for r in regions:
        s = sync_region(cfg, r, opts, manifests=manifests, progress=progress)
        out.append(s)
        if on_summary is not None:
            on_summary(s)
    return out


def summary_json(s: SyncSummary) -> str:
    return json.dumps(s.to_json(), sort_keys=False)
