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

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tritonops.config import Config
from tritonops.errors import (
    PlanError,
    RepositoryError,
    ResidencyError,
    StoreError,
    UnsafePlanError,
)
from tritonops.fileio import sha256_bytes
from tritonops.guard import ChangeGuard
from tritonops.regions import per_region
from tritonops.release.pointer import PublishRelease, publish_release
from tritonops.repo.manifest import (
    CONFIG_NAME,
    INDEX_NAME,
    MANIFEST_NAME,
    ModelManifest,
    RepoIndex,
    VersionEntry,
)
from tritonops.store import open_store
from tritonops.store.base import DEFAULT_WORKERS, ObjectInfo, ObjectStore, check_key
from tritonops.store.localrepo import LocalModels, LocalRepository, open_local, stat_cache_path
from tritonops.store.pubconfig import config_problem, published_config

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_MAX_DELETE_FRACTION = 0.25
DELETE_GUARD = ChangeGuard(DEFAULT_MAX_DELETE_FRACTION)
# Called with each object's key right after it is written, one call at a time (the tests kill the
# process from here to prove the publish order).
StepFn = Callable[[str], None]


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
    repair: bool = False  # re-upload what differs from the published manifests (see store/repair.py)
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
        index = self.index_to_write()
        if index is not None:
            sizes.append(len(index))
        if self.final_index is not None and self.delete_keys():
            sizes.append(len(self.final_index.dumps()))
        return sizes

    def index_to_write(self) -> bytes | None:
        """The new index's bytes; None where the bucket's index already says the same.

        Compared as data, not bytes: serialising a large index costs more than the no-op's GET.
        """
        if self.new_index is None:
            return None
        if self.remote_index is not None and self.remote_index.models == self.new_index.models:
            return None
        return self.new_index.dumps()

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
    repair: dict[str, Any] | None = None  # RepairReport.to_json() with --repair

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
            "repair": self.repair,
            "notes": self.notes,
        }


# -- helpers ----------------------------------------------------------------------------------


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


class _Steps:
    """Reports every object write to ``on_step``, one call at a time (writes come from worker threads)."""

    def __init__(self, on_step: StepFn | None) -> None:
        self._lock = threading.Lock()
        self._on_step = on_step

    def done(self, key: str) -> None:
        if self._on_step is not None:
            with self._lock:
                self._on_step(key)


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


def _load_remote_manifest(store: ObjectStore, model: str, raw: bytes | None) -> tuple[ModelManifest | None, str]:
    """(manifest, why-not). Raises StoreError if it names keys outside the prefix."""
    source = f"{store.url}/{model}/{MANIFEST_NAME}"
    if raw is None:
        return None, "remote manifest missing"
    try:
        man = ModelManifest.loads(raw, source, verify=False)
        _check_remote_manifest_keys(man, source)  # keys outside the prefix are refused, whatever else
        ModelManifest.loads(raw, source)  # its digests
    except RepositoryError as e:
        return None, f"remote manifest unreadable ({str(e).split(': ', 1)[-1]})"
    if man.model != model:
        return None, f"remote manifest names model {man.model!r}"
    return man, ""


def _verified_config(mdir: Path, local: ModelManifest) -> str:
    """The local config.pbtxt, refused if it changed since load_local verified it (a race)."""
    raw = (mdir / CONFIG_NAME).read_bytes()
    if local.config_sha256 and sha256_bytes(raw) != local.config_sha256:
        raise RepositoryError(
            f"{mdir / CONFIG_NAME}: config_sha256: config.pbtxt changed during sync; nothing points at it, rerun"
        )
    return raw.decode("utf-8")


def _plan_model(
    mp: ModelPlan,
    store: ObjectStore,
    root: Path,
    opts: SyncOptions,
    listing: dict[str, ObjectInfo] | None,
    pool: ThreadPoolExecutor,
    release: PublishRelease,
) -> None:
    """Fill ``mp``: what to upload, skip, withdraw and prune for one local model.

    ``release`` (tritonops.release): the region's live pointer is not the local repository's to move."""
    local, remote, model = mp.local, mp.remote, mp.model
    mdir = root / model
    published: dict[int, VersionEntry] = {}

    if remote is None:
        # No trusted manifest: what is there already is proven by size + sha256 metadata only.
        need_head = []
        for n, v in sorted(local.versions.items()):
            for f in v.files:
                key = f"{model}/{n}/{f.path}"
                o = listing.get(key) if listing is not None else None
                if o is not None and o.size == f.size:
                    need_head.append((key, f.sha256))
        heads = dict(zip([k for k, _ in need_head], pool.map(store.head, [k for k, _ in need_head]), strict=True))
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
    mp.config_bytes = published_config(
        _verified_config(mdir, local), live, str(mdir / CONFIG_NAME), release.pointer(mp.final)
    )
    if remote is not None:
        remote_live_set = sorted(remote.versions)
        mp.write_config = bool(
            mp.new_versions or mp.changed_versions or mp.prune_versions
            or remote.config_sha256 != config_sha or remote_live_set != live
        )  # fmt: skip
        mp.write_manifest = mp.target.dumps() != remote.dumps()


def plan_region(cfg: Config, region: str, local: LocalModels, opts: SyncOptions, store: ObjectStore) -> RegionPlan:
    """Compare the local manifests with the bucket; reads only (GET index, GET changed manifests)."""
    plan = RegionPlan(region, store.url)
    allowed = _models_for_region(cfg, region, local, opts, plan)
    remote_index, listing, remote_models = _read_remote_state(store, plan)
    with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-plan") as pool:
        to_get = _split_unchanged(allowed, local, remote_index, plan)
        prune_candidates: list[str] = []
        if opts.prune and opts.models is None:
            prune_candidates = sorted(remote_models - set(allowed))
        fetched = _fetch_manifests(store, to_get + prune_candidates, remote_index, remote_models, pool)
        todo: list[tuple[ModelPlan, dict[str, ObjectInfo] | None]] = []
        for m in to_get:
            remote, why = _trusted_remote_manifest(store, m, fetched[m], remote_index, listing)
            model_listing = listing
            if remote is None and ((remote_index is not None and m in remote_index.models) or fetched[m] is not None):
                plan.notes.append(f"model {m}: {why}; listing and verifying its objects instead")
                model_listing = listing if listing is not None else {o.key: o for o in store.list(f"{m}/")}
            todo.append((ModelPlan(m, local[m], remote), model_listing))
        # One release-record GET per changed model, in parallel; none where the LIST shows no record.
        releases = pool.map(
            lambda t: publish_release(store, cfg.release.mode, t[0].model, t[0].remote is not None, listing), todo
        )
        for (mp, model_listing), release in zip(todo, list(releases), strict=True):
            _plan_model(mp, store, cfg.repository_path, opts, model_listing, pool, release)
            plan.models.append(mp)
            plan.skipped_files += mp.skipped_files
        for m in prune_candidates:
            remote, why = _load_remote_manifest(store, m, fetched[m])
            if remote is None:
                plan.notes.append(f"model {m}: not pruned ({why}; cannot tell which keys tritonops published)")
                continue
            plan.prune_models[m] = remote
    _plan_indexes(plan, remote_index)
    plan.published_files_before = _published_files_before(plan, local)
    plan.models.sort(key=lambda p: p.model)
    return plan


def _models_for_region(
    cfg: Config, region: str, local: LocalModels, opts: SyncOptions, plan: RegionPlan
) -> list[str]:
    """The local models to sync here: those asked for (all by default) that residency allows."""
    root = cfg.repository_path
    names = list(local)
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
        names = list(opts.models)
    allowed = [m for m in names if cfg.is_allowed(m, region)]
    plan.residency_skipped = sorted(set(names) - set(allowed))
    for m in plan.residency_skipped:
        log.info("region %s: skipping model %s (residency: not allowed here)", region, m)
    return allowed


def _read_remote_state(
    store: ObjectStore, plan: RegionPlan
) -> tuple[RepoIndex | None, dict[str, ObjectInfo] | None, set[str]]:
    """(remote index, listing, remote models): the index if trusted, else one LIST of the prefix."""
    remote_index = _load_remote_index(store, plan.notes)
    plan.remote_index = remote_index
    if remote_index is not None:
        return remote_index, None, set(remote_index.models)
    # First sync, a lost index or an untrusted one: one LIST of the prefix tells what is there.
    listing = {o.key: o for o in store.list("")}
    remote_models = {k.split("/", 1)[0] for k in listing if k.endswith("/" + MANIFEST_NAME)}
    if remote_models and not plan.notes:  # an untrusted index was noted, with its reason, above
        plan.notes.append(
            f"no {INDEX_NAME} at {store.url} though {len(remote_models)} model(s) are published there (a sync "
            f"stopped before its last step?): listed {len(listing)} objects and checked their sha256 metadata"
        )
    return None, listing, remote_models


def _split_unchanged(
    allowed: list[str], local: LocalModels, remote_index: RepoIndex | None, plan: RegionPlan
) -> list[str]:
    """Record the models whose digest the remote index already has; return the others.

    The others' remote manifests are read: changed models, and models absent from the index (a
    sync killed between manifest and index).
    """
    to_get: list[str] = []
    for m in sorted(allowed):
        if remote_index is not None and remote_index.models.get(m, {}).get("digest") == local.digest(m):
            plan.unchanged_models.append(m)
            plan.skipped_files += local.files(m)
            continue
        to_get.append(m)
    return to_get


def _fetch_manifests(
    store: ObjectStore,
    names: list[str],
    remote_index: RepoIndex | None,
    remote_models: set[str],
    pool: ThreadPoolExecutor,
) -> dict[str, bytes | None]:
    """The raw remote manifest of each of ``names`` (None where there is none)."""
    if remote_index is None:
        raws = [store.get(f"{m}/{MANIFEST_NAME}") if m in remote_models else None for m in names]
    else:
        raws = list(pool.map(lambda m: store.get(f"{m}/{MANIFEST_NAME}"), names))
    return dict(zip(names, raws, strict=True))


def _trusted_remote_manifest(
    store: ObjectStore,
    m: str,
    raw: bytes | None,
    remote_index: RepoIndex | None,
    listing: dict[str, ObjectInfo] | None,
) -> tuple[ModelManifest | None, str]:
    """(manifest, why-not): the remote manifest, trusted only if it agrees with the index and
    (without an index) with the listing."""
    remote, why = _load_remote_manifest(store, m, raw)
    in_index = remote_index is not None and m in remote_index.models
    if remote is not None and in_index and remote.digest != remote_index.models[m]["digest"]:  # type: ignore[union-attr]
        remote, why = None, "remote manifest does not match the remote index"
    if remote is not None and listing is not None:
        missing = [k for k in _model_keys(m, remote)[1:-1] if k not in listing]
        if missing:
            remote, why = None, f"remote manifest lists {len(missing)} missing objects"
    return remote, why


def _plan_indexes(plan: RegionPlan, remote_index: RepoIndex | None) -> None:
    """The index after step 3 and after the prune: every model tritonops keeps published here."""
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


def _published_files_before(plan: RegionPlan, local: LocalModels) -> int:
    """Files published in the region before this sync, for the prune guard."""
    before = sum(local.files(m) for m in plan.unchanged_models)
    before += sum(len(v.files) for mp in plan.models if mp.remote is not None for v in mp.remote.versions.values())
    before += sum(len(v.files) for man in plan.prune_models.values() for v in man.versions.values())
    # ... plus each model's config and manifest: deletes count them too.
    before += 2 * (len(plan.unchanged_models) + sum(1 for mp in plan.models if mp.remote) + len(plan.prune_models))
    return before


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
    limit = DELETE_GUARD.limit(plan.published_files_before) if opts.max_delete is None else opts.max_delete
    if DELETE_GUARD.breach(len(deletes), plan.published_files_before, limit=limit) and not opts.force:
        raise UnsafePlanError(
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
    steps: _Steps,
    progress: SyncProgress | None,
) -> None:
    """Steps 1 and 2, pipelined per model: a model's config and manifest go up as soon as its last
    file is verified in the bucket, while other models' files are still uploading (the index, which
    is what makes anything new visible as a whole, waits for all of them)."""
    left = {mp.model: len(mp.uploads) for mp in plan.models}
    by_model = {mp.model: mp for mp in plan.models}
    lock = threading.Lock()

    def pointers(mp: ModelPlan) -> None:
        assert mp.target is not None
        if mp.write_config:
            _put_pointer(store, f"{mp.model}/{CONFIG_NAME}", mp.config_bytes, steps)
        if mp.write_manifest:
            _put_pointer(store, f"{mp.model}/{MANIFEST_NAME}", mp.target.dumps(), steps)

    def one(item: Upload | ModelPlan) -> None:
        if isinstance(item, ModelPlan):  # nothing to upload: its pointers only
            pointers(item)
            return
        u = item
        digest = store.put_file(u.key, str(u.path), u.size, u.sha256, progress.advance if progress else None)
        if digest != u.sha256:
            raise RepositoryError(
                f"{u.path}: model {u.model!r} version {u.version}: sha256 {digest[:12]}... differs from the "
                f"manifest ({u.sha256[:12]}...): the file changed after `tritonops repo add` or during sync; "
                "nothing points at it (run `tritonops repo validate`)"
            )
        steps.done(u.key)
        if progress:
            progress.file_done()
        with lock:
            left[u.model] -= 1
            last = left[u.model] == 0
        if last:
            pointers(by_model[u.model])

    # Largest first: a big upload starts early and overlaps the many small ones; then in model
    # order, so that models complete (and publish their pointers) one after another.
    uploads = sorted(plan.uploads, key=lambda u: -u.size)
    _run_parallel(pool, one, [*uploads, *(mp for mp in plan.models if not mp.uploads)])


def _put_pointer(store: ObjectStore, key: str, data: bytes, steps: _Steps) -> None:
    store.put_bytes(key, data, sha256_bytes(data))
    steps.done(key)


def _withdraw_changed(store: ObjectStore, plan: RegionPlan, root: Path, steps: _Steps) -> None:
    """--force on a changed version: unpublish it (config + manifest) before replacing its files."""
    for mp in plan.models:
        if not mp.changed_versions or mp.remote is None:
            continue
        keep = {n: v for n, v in mp.remote.versions.items() if n not in mp.changed_versions}
        text = (root / mp.model / CONFIG_NAME).read_text(encoding="utf-8")
        cfg_bytes = published_config(text, sorted(keep), str(root / mp.model / CONFIG_NAME))
        _put_pointer(store, f"{mp.model}/{CONFIG_NAME}", cfg_bytes, steps)
        _put_pointer(
            store,
            f"{mp.model}/{MANIFEST_NAME}",
            ModelManifest(mp.model, keep, mp.remote.config_sha256).dumps(),
            steps,
        )


def verify_region(
    store: ObjectStore,
    index: RepoIndex,
    manifests: Mapping[str, ModelManifest],
    pool: ThreadPoolExecutor,
    local_configs: Mapping[str, tuple[str, str]] | None = None,
) -> int:
    """Download and hash every object the manifests list; raise StoreError naming the first mismatch.

    Each version is checked as reconcile checks it before a load (:func:`tritonops.store.verify.verify_version`
    with ``full``: present, size, recorded sha256, bytes, and no object the manifest does not list).
    Each config is checked with :func:`tritonops.store.pubconfig.config_problem`, against the local
    config where ``local_configs`` has it (model -> text, path). Returns the number of objects checked.
    """
    from tritonops.store.verify import verify_version

    mans = [manifests[m] for m in sorted(index.models) if m in manifests]
    versions = [(man, n) for man in mans for n in sorted(man.versions)]
    n_files = sum(len(man.versions[n].files) for man, n in versions)

    def check(job: tuple[ModelManifest, int]) -> str | None:
        bad = verify_version(store, job[0], job[1], full=True)
        return f"{store.url}: {bad[0].line()}" if bad else None

    def check_config(man: ModelManifest) -> str | None:
        return config_problem(store, man, (local_configs or {}).get(man.model))

    problems = [p for p in pool.map(check, versions) if p]
    problems += [p for p in pool.map(check_config, mans) if p]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreError(f"verify failed: {problems[0]}{more}")
    return n_files + len(manifests)


def _remote_manifests_for_verify(
    store: ObjectStore, plan: RegionPlan, local: Mapping[str, ModelManifest], pool: ThreadPoolExecutor
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


def _local_configs(
    root: Path, local: Mapping[str, ModelManifest], published: Mapping[str, ModelManifest]
) -> dict[str, tuple[str, str]]:
    """The local config.pbtxt (text, path) of each published model whose manifest records it as
    the published config (a local edit not synced yet, e.g. under --model, is not what the bucket
    should hold), checked against its local manifest."""
    return {
        m: (_verified_config(root / m, local[m]), str(root / m / CONFIG_NAME))
        for m, man in published.items()
        if m in local and local[m].config_sha256 == man.config_sha256
    }


def _repair(
    st: ObjectStore, plan: RegionPlan, root: Path, opts: SyncOptions, local: Mapping[str, ModelManifest], cfg: Config
) -> dict[str, Any]:
    """--repair: every published version this sync did not just upload, checked and fixed; then
    every published config, rewritten where it is not what sync would have written."""
    from tritonops.store.repair import repair_published

    skip = {(mp.model, n) for mp in plan.models for n in [*mp.new_versions, *mp.changed_versions]}
    with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-repair") as pool:
        mans = _remote_manifests_for_verify(st, plan, local, pool)
        mans = {m: man for m, man in mans.items() if m in local}  # the local files are the source of repair
        rep = repair_published(
            st, mans, local, root, region=plan.region, full=opts.verify, dry_run=opts.dry_run, skip=skip
        )
        configs = _local_configs(root, local, mans)
        written = {mp.model for mp in plan.models if mp.write_config}  # by this sync (or its dry run)

        def fix_config(man: ModelManifest) -> tuple[str | None, str | None]:
            if man.model not in configs or man.model in written:  # a change to publish, not a repair
                return None, None
            why = config_problem(st, man, configs[man.model])
            if why is None or opts.dry_run:
                return why, None
            # The pointer sync itself would write: the release record's live version, else what the
            # bucket's config points at (explicit mode), else the local policy.
            pointer = publish_release(st, cfg.release.mode, man.model, True).pointer(man)
            text, source = configs[man.model]
            key = f"{man.model}/{CONFIG_NAME}"
            data = published_config(text, sorted(man.versions), source, pointer)
            st.put_bytes(key, data, sha256_bytes(data))
            again = config_problem(st, man, configs[man.model])
            if again is not None:
                raise StoreError(f"repair did not take: {again}")
            log.info("region %s: model %s config.pbtxt repaired", plan.region, man.model)
            return why, key

        for why, key in pool.map(fix_config, [mans[m] for m in sorted(mans)]):
            if why is not None:
                rep.configs_found.append(why)
            if key is not None:
                rep.uploaded.append(key)
    return rep.to_json()


def sync_region(
    cfg: Config,
    region: str,
    opts: SyncOptions,
    local: LocalRepository | None = None,
    progress: SyncProgress | None = None,
    on_step: StepFn | None = None,
) -> SyncSummary:
    """Publish the local repository to one region. See the module docstring for the order.

    ``on_step`` is called with each object's key right after it is written."""
    t0 = time.monotonic()
    rcfg = cfg.region(region)
    root = cfg.repository_path
    if local is None:
        local = open_local(root, stat_cache_path(cfg))
    models = local.models
    st = open_store(rcfg, region, max_workers=opts.workers)
    try:
        plan = plan_region(cfg, region, models, opts, st)
        check_plan(plan, opts)
        # Never publish what `repo validate` rejects: open_local validated every model that moved
        # on disk since it was last verified; their bytes are hashed once, here for the files this
        # sync does not send, and as they are sent for the others.
        local.prove(skip=() if opts.dry_run else {u.path for u in plan.uploads}, workers=min(opts.workers, 4))
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
        if not opts.dry_run:
            _apply(st, plan, root, opts, progress, on_step)
            local.sent(u.path for u in plan.uploads)
        if opts.repair:
            summary.repair = _repair(st, plan, root, opts, models, cfg)
        summary.seconds = time.monotonic() - t0
        if opts.dry_run:
            return summary
        if opts.verify:
            with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-verify") as pool:
                assert plan.final_index is not None
                mans = _remote_manifests_for_verify(st, plan, models, pool)
                configs = _local_configs(root, models, mans)
                summary.verified_files = verify_region(st, plan.final_index, mans, pool, configs)
        return summary
    finally:
        st.close()


def _apply(
    st: ObjectStore,
    plan: RegionPlan,
    root: Path,
    opts: SyncOptions,
    progress: SyncProgress | None,
    on_step: StepFn | None,
) -> None:
    steps = _Steps(on_step)
    uploads = plan.uploads
    if progress is not None and uploads:
        progress.start(plan.region, len(uploads), sum(u.size for u in uploads))
    try:
        with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-put") as pool:
            # 0. --force: withdraw changed versions before their files are replaced.
            _withdraw_changed(st, plan, root, steps)
            # 1. version files, verified; 2. per model, once its files are up: config (complete
            # versions only), then manifest.
            _upload_all(st, plan, pool, steps, progress)
            # 3. the index, last.
            assert plan.new_index is not None and plan.final_index is not None
            new_index_bytes = plan.index_to_write()
            if new_index_bytes is not None:
                _put_pointer(st, INDEX_NAME, new_index_bytes, steps)
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
                _put_pointer(st, f"{mp.model}/{MANIFEST_NAME}", mp.final.dumps(), steps)
            for m, man in sorted(plan.prune_models.items()):
                keys = _model_keys(m, man)
                st.delete(keys[:1])  # config first: nothing can load the model any more
                st.delete(keys[1:-1])
                st.delete(keys[-1:])
            _put_pointer(st, INDEX_NAME, plan.final_index.dumps(), steps)
    finally:
        if progress is not None and uploads:
            progress.finish()


def sync(
    cfg: Config,
    regions: list[str],
    opts: SyncOptions,
    progress: SyncProgress | None = None,
    on_summary: Callable[[SyncSummary], None] | None = None,
    on_step: StepFn | None = None,
    on_fail: Callable[[str, str], None] | None = None,
) -> list[SyncSummary]:
    """Publish the repository to each region in turn.

    A failure that belongs to one region (its bucket unreachable or refusing, its verify failing,
    its change guard, its residency rule) does not keep the next regions from their sync: with
    several regions, each is tried, and :class:`RegionsFailedError` then names every region that
    failed. Anything else (the local repository, the config) stops at once.

    ``on_step`` is called with each object's key right after it is written (see :func:`sync_region`);
    ``on_summary`` with each region's summary, ``on_fail`` with (region, line) for each that failed."""
    for r in regions:
        cfg.region(r)  # unknown region: one line before anything happens
    if not regions:
        raise PlanError("no region to sync (pass --region or --all-regions; none configured?)")
    local = open_local(cfg.repository_path, stat_cache_path(cfg))
    if not local.models:
        raise RepositoryError(f"{cfg.repository_path}: no model to publish (empty repository)")

    def one(r: str) -> SyncSummary:
        s = sync_region(cfg, r, opts, local=local, progress=progress, on_step=on_step)
        if on_summary is not None:
            on_summary(s)
        return s

    res = per_region(regions, one, (StoreError, UnsafePlanError, ResidencyError), on_fail)
    res.raise_if_failed("synced")
    return [s for _, s in res.done]


def summary_json(s: SyncSummary) -> str:
    return json.dumps(s.to_json(), sort_keys=False)


def failure_json(region: str, line: str) -> str:
    """The JSON line of a region whose sync failed (beside the others' summaries)."""
    return json.dumps({"format_version": FORMAT_VERSION, "region": region, "error": line})
