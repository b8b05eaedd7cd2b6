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

The modules, one job each: :mod:`~tritonops.store.sync_plan` (the plan and its safety check),
:mod:`~tritonops.store.transfer` (applying it in that order), :mod:`~tritonops.store.sync_verify`
(``--verify`` and ``--repair``), and this one, the driver: one region, then every region asked for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tritonops.config import Config
from tritonops.errors import PlanError, RepositoryError, ResidencyError, StoreError, UnsafePlanError
from tritonops.regions import per_region
from tritonops.store import open_store
from tritonops.store.localrepo import LocalRepository, open_local, stat_cache_path
from tritonops.store.sync_plan import (
    DEFAULT_MAX_DELETE_FRACTION,
    DELETE_GUARD,
    ModelPlan,
    PublishedRelease,
    RegionPlan,
    ReleaseReader,
    SyncOptions,
    Upload,
    check_plan,
    plan_region,
)
from tritonops.store.sync_verify import local_configs, remote_manifests_for_verify, repair_region, verify_region
from tritonops.store.transfer import StepFn, SyncProgress, apply_plan

__all__ = [
    "DEFAULT_MAX_DELETE_FRACTION",
    "DELETE_GUARD",
    "FORMAT_VERSION",
    "ModelPlan",
    "PublishedRelease",
    "RegionPlan",
    "ReleaseReader",
    "StepFn",
    "SyncOptions",
    "SyncProgress",
    "SyncSummary",
    "Upload",
    "check_plan",
    "failure_json",
    "plan_region",
    "summary_json",
    "sync",
    "sync_region",
    "verify_region",
]

FORMAT_VERSION = 1


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


def sync_region(
    cfg: Config,
    region: str,
    opts: SyncOptions,
    local: LocalRepository | None = None,
    progress: SyncProgress | None = None,
    on_step: StepFn | None = None,
    *,
    releases: ReleaseReader,
) -> SyncSummary:
    """Publish the local repository to one region. See the module docstring for the order.

    ``on_step`` is called with each object's key right after it is written. ``releases`` reads a
    model's release (``tritonops.release.pointer.publish_release``)."""
    t0 = time.monotonic()
    rcfg = cfg.region(region)
    root = cfg.repository_path
    if local is None:
        local = open_local(root, stat_cache_path(cfg))
    models = local.models
    st = open_store(rcfg, region, max_workers=opts.workers)
    try:
        plan = plan_region(cfg, region, models, opts, st, releases)
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
            apply_plan(st, plan, root, opts, progress, on_step)
            local.sent(u.path for u in plan.uploads)
        if opts.repair:
            summary.repair = repair_region(st, plan, root, opts, models, cfg, releases)
        summary.seconds = time.monotonic() - t0
        if opts.dry_run:
            return summary
        if opts.verify:
            with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-verify") as pool:
                assert plan.final_index is not None
                mans = remote_manifests_for_verify(st, plan, models, pool)
                configs = local_configs(root, models, mans)
                summary.verified_files = verify_region(st, plan.final_index, mans, pool, configs)
        return summary
    finally:
        st.close()


def sync(
    cfg: Config,
    regions: list[str],
    opts: SyncOptions,
    progress: SyncProgress | None = None,
    on_summary: Callable[[SyncSummary], None] | None = None,
    on_step: StepFn | None = None,
    on_fail: Callable[[str, str], None] | None = None,
    *,
    releases: ReleaseReader,
) -> list[SyncSummary]:
    """Publish the repository to each region in turn.

    A failure that belongs to one region (its bucket unreachable or refusing, its verify failing,
    its change guard, its residency rule) does not keep the next regions from their sync: with
    several regions, each is tried, and :class:`RegionsFailedError` then names every region that
    failed. Anything else (the local repository, the config) stops at once.

    ``on_step`` is called with each object's key right after it is written (see :func:`sync_region`);
    ``on_summary`` with each region's summary, ``on_fail`` with (region, line) for each that failed.
    ``releases``: how a model's release is read (``tritonops.release.pointer.publish_release``)."""
    for r in regions:
        cfg.region(r)  # unknown region: one line before anything happens
    if not regions:
        raise PlanError("no region to sync (pass --region or --all-regions; none configured?)")
    local = open_local(cfg.repository_path, stat_cache_path(cfg))
    if not local.models:
        raise RepositoryError(f"{cfg.repository_path}: no model to publish (empty repository)")

    def one(r: str) -> SyncSummary:
        s = sync_region(cfg, r, opts, local=local, progress=progress, on_step=on_step, releases=releases)
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
