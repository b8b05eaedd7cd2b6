"""Checking what a sync published (``--verify``) and repairing it (``--repair``): every object of the
published versions against the manifests, and every published config against what sync writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tritonops.config import Config
from tritonops.errors import StoreError
from tritonops.fileio import sha256_bytes
from tritonops.repo.manifest import CONFIG_NAME, MANIFEST_NAME, ModelManifest, RepoIndex
from tritonops.store.base import ObjectStore
from tritonops.store.pubconfig import config_problem, published_config
from tritonops.store.repair import repair_published
from tritonops.store.sync_plan import RegionPlan, ReleaseReader, SyncOptions, load_remote_manifest, verified_config
from tritonops.store.verify import verify_version

log = logging.getLogger("tritonops.store.sync")  # the sync's own lines, as before the split


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


def remote_manifests_for_verify(
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
        man, why = load_remote_manifest(store, m, raw)
        if man is None:
            raise StoreError(f"verify failed: model {m}: {why}")
        known[m] = man
    return known


def local_configs(
    root: Path, local: Mapping[str, ModelManifest], published: Mapping[str, ModelManifest]
) -> dict[str, tuple[str, str]]:
    """The local config.pbtxt (text, path) of each published model whose manifest records it as
    the published config (a local edit not synced yet, e.g. under --model, is not what the bucket
    should hold), checked against its local manifest."""
    return {
        m: (verified_config(root / m, local[m]), str(root / m / CONFIG_NAME))
        for m, man in published.items()
        if m in local and local[m].config_sha256 == man.config_sha256
    }


def repair_region(
    st: ObjectStore,
    plan: RegionPlan,
    root: Path,
    opts: SyncOptions,
    local: Mapping[str, ModelManifest],
    cfg: Config,
    releases: ReleaseReader,
) -> dict[str, Any]:
    """--repair: every published version this sync did not just upload, checked and fixed; then
    every published config, rewritten where it is not what sync would have written."""
    skip = {(mp.model, n) for mp in plan.models for n in [*mp.new_versions, *mp.changed_versions]}
    with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-repair") as pool:
        mans = remote_manifests_for_verify(st, plan, local, pool)
        mans = {m: man for m, man in mans.items() if m in local}  # the local files are the source of repair
        rep = repair_published(
            st, mans, local, root, region=plan.region, full=opts.verify, dry_run=opts.dry_run, skip=skip
        )
        configs = local_configs(root, local, mans)
        written = {mp.model for mp in plan.models if mp.write_config}  # by this sync (or its dry run)

        def fix_config(man: ModelManifest) -> tuple[str | None, str | None]:
            if man.model not in configs or man.model in written:  # a change to publish, not a repair
                return None, None
            why = config_problem(st, man, configs[man.model])
            if why is None or opts.dry_run:
                return why, None
            # The pointer sync itself would write: the release record's live version, else what the
            # bucket's config points at (explicit mode), else the local policy.
            pointer = releases(st, cfg.release.mode, man.model, True).pointer(man)
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
