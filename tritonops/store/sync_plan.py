"""Planning a sync: what to upload, skip, withdraw and prune in one region, read from the bucket
(one GET of the index, one GET per changed model's manifest), and the plan's safety check.

The plan is computed before anything is written; :mod:`tritonops.store.transfer` applies it and
:mod:`tritonops.store.sync` drives both per region.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tritonops.config import Config, ReleaseMode
from tritonops.errors import PlanError, RepositoryError, ResidencyError, StoreError, UnsafePlanError
from tritonops.fileio import sha256_bytes
from tritonops.guard import ChangeGuard
from tritonops.repo.manifest import CONFIG_NAME, INDEX_NAME, MANIFEST_NAME, ModelManifest, RepoIndex, VersionEntry
from tritonops.store.base import DEFAULT_WORKERS, ObjectInfo, ObjectStore, check_key
from tritonops.store.localrepo import LocalModels
from tritonops.store.pubconfig import published_config

log = logging.getLogger("tritonops.store.sync")  # the sync's own lines, as before the split

DEFAULT_MAX_DELETE_FRACTION = 0.25
DELETE_GUARD = ChangeGuard(DEFAULT_MAX_DELETE_FRACTION)


class PublishedRelease(Protocol):
    """What a model's release says about publishing it (``tritonops.release.pointer.PublishRelease``)."""

    @property
    def protected(self) -> set[int]: ...

    def pointer(self, final: ModelManifest) -> list[int] | None: ...


class ReleaseReader(Protocol):
    """Reads a model's release in a region's bucket (``tritonops.release.pointer.publish_release``).

    Handed in by the caller: releases are a layer above the store, and sync only asks them which
    versions the published config points at and which a prune must keep."""

    def __call__(
        self, store: ObjectStore, mode: ReleaseMode, model: str, published: bool, listed: Container[str] | None = None
    ) -> PublishedRelease: ...


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
            keys += model_keys(model, man)
        return keys


# -- helpers ----------------------------------------------------------------------------------


def model_keys(model: str, man: ModelManifest) -> list[str]:
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


def load_remote_manifest(store: ObjectStore, model: str, raw: bytes | None) -> tuple[ModelManifest | None, str]:
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


def verified_config(mdir: Path, local: ModelManifest) -> str:
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
    release: PublishedRelease,
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
        verified_config(mdir, local), live, str(mdir / CONFIG_NAME), release.pointer(mp.final)
    )
    if remote is not None:
        remote_live_set = sorted(remote.versions)
        mp.write_config = bool(
            mp.new_versions or mp.changed_versions or mp.prune_versions
            or remote.config_sha256 != config_sha or remote_live_set != live
        )  # fmt: skip
        mp.write_manifest = mp.target.dumps() != remote.dumps()


def plan_region(
    cfg: Config, region: str, local: LocalModels, opts: SyncOptions, store: ObjectStore, releases: ReleaseReader
) -> RegionPlan:
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
        found = pool.map(
            lambda t: releases(store, cfg.release.mode, t[0].model, t[0].remote is not None, listing), todo
        )
        for (mp, model_listing), release in zip(todo, list(found), strict=True):
            _plan_model(mp, store, cfg.repository_path, opts, model_listing, pool, release)
            plan.models.append(mp)
            plan.skipped_files += mp.skipped_files
        for m in prune_candidates:
            remote, why = load_remote_manifest(store, m, fetched[m])
            if remote is None:
                plan.notes.append(f"model {m}: not pruned ({why}; cannot tell which keys tritonops published)")
                continue
            plan.prune_models[m] = remote
    _plan_indexes(plan, remote_index)
    plan.published_files_before = _published_files_before(plan, local)
    plan.models.sort(key=lambda p: p.model)
    return plan


def _models_for_region(cfg: Config, region: str, local: LocalModels, opts: SyncOptions, plan: RegionPlan) -> list[str]:
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
                    f"(models.{m}.regions: {', '.join(cfg.allowed_regions(m)) or 'none'})",
                    region=region,
                    model=m,
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
    if listing:
        plan.notes.append(
            f"no trusted remote index at {store.url}/{INDEX_NAME}: listed {len(listing)} objects "
            "and verified sha256 metadata instead"
        )
    remote_models = {k.split("/", 1)[0] for k in listing if k.endswith("/" + MANIFEST_NAME)}
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
    remote, why = load_remote_manifest(store, m, raw)
    in_index = remote_index is not None and m in remote_index.models
    if remote is not None and in_index and remote.digest != remote_index.models[m]["digest"]:  # type: ignore[union-attr]
        remote, why = None, "remote manifest does not match the remote index"
    if remote is not None and listing is not None:
        missing = [k for k in model_keys(m, remote)[1:-1] if k not in listing]
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
                "or pass --force to replace it)",
                region=plan.region,
                model=mp.model,
                version=n,
            )
    deletes = plan.delete_keys()
    if not deletes:
        return
    limit = DELETE_GUARD.limit(plan.published_files_before) if opts.max_delete is None else opts.max_delete
    if DELETE_GUARD.breach(len(deletes), plan.published_files_before, limit=limit) and not opts.force:
        raise UnsafePlanError(
            f"region {plan.region}: --prune would delete {len(deletes)} of the "
            f"{plan.published_files_before} objects tritonops published (limit {limit}, --max-delete); "
            "pass --force to delete them anyway",
            region=plan.region,
        )
