"""Applying a sync plan to a region's bucket, in the publish order of :mod:`tritonops.store.sync`:
version files (verified as they go up), each model's config and manifest once its files are up,
the index, and only then the prune.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

from tritonops.errors import RepositoryError
from tritonops.fileio import sha256_bytes
from tritonops.repo.manifest import CONFIG_NAME, INDEX_NAME, MANIFEST_NAME, ModelManifest, RepoIndex
from tritonops.store.base import ObjectStore
from tritonops.store.pubconfig import published_config
from tritonops.store.sync_plan import ModelPlan, RegionPlan, SyncOptions, Upload, model_keys
from tritonops.store.sync_verify import verify_region

# Called with each object's key right after it is written, one call at a time (the tests kill the
# process from here to prove the publish order).
StepFn = Callable[[str], None]


class SyncProgress(Protocol):
    """Progress sink (the CLI's rich bar on a TTY); the engine calls it from worker threads."""

    def start(self, region: str, total_files: int, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_done(self) -> None: ...

    def finish(self) -> None: ...


class Steps:
    """Reports every object write to ``on_step``, one call at a time (writes come from worker threads)."""

    def __init__(self, on_step: StepFn | None) -> None:
        self._lock = threading.Lock()
        self._on_step = on_step

    def done(self, key: str) -> None:
        if self._on_step is not None:
            with self._lock:
                self._on_step(key)


def run_parallel(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
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


def upload_all(
    store: ObjectStore,
    plan: RegionPlan,
    pool: ThreadPoolExecutor,
    steps: Steps,
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
            put_pointer(store, f"{mp.model}/{CONFIG_NAME}", mp.config_bytes, steps)
        if mp.write_manifest:
            put_pointer(store, f"{mp.model}/{MANIFEST_NAME}", mp.target.dumps(), steps)

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
    run_parallel(pool, one, [*uploads, *(mp for mp in plan.models if not mp.uploads)])


def put_pointer(store: ObjectStore, key: str, data: bytes, steps: Steps) -> None:
    store.put_bytes(key, data, sha256_bytes(data))
    steps.done(key)


def withdraw_changed(store: ObjectStore, plan: RegionPlan, root: Path, steps: Steps) -> None:
    """--force on a changed version: unpublish it (config + manifest) before replacing its files."""
    for mp in plan.models:
        if not mp.changed_versions or mp.remote is None:
            continue
        keep = {n: v for n, v in mp.remote.versions.items() if n not in mp.changed_versions}
        text = (root / mp.model / CONFIG_NAME).read_text(encoding="utf-8")
        cfg_bytes = published_config(text, sorted(keep), str(root / mp.model / CONFIG_NAME))
        put_pointer(store, f"{mp.model}/{CONFIG_NAME}", cfg_bytes, steps)
        put_pointer(
            store,
            f"{mp.model}/{MANIFEST_NAME}",
            ModelManifest(mp.model, keep, mp.remote.config_sha256).dumps(),
            steps,
        )


def apply_plan(
    st: ObjectStore,
    plan: RegionPlan,
    root: Path,
    opts: SyncOptions,
    progress: SyncProgress | None,
    on_step: StepFn | None,
) -> None:
    steps = Steps(on_step)
    uploads = plan.uploads
    if progress is not None and uploads:
        progress.start(plan.region, len(uploads), sum(u.size for u in uploads))
    try:
        with ThreadPoolExecutor(opts.workers, thread_name_prefix="sync-put") as pool:
            # 0. --force: withdraw changed versions before their files are replaced.
            withdraw_changed(st, plan, root, steps)
            # 1. version files, verified; 2. per model, once its files are up: config (complete
            # versions only), then manifest.
            upload_all(st, plan, pool, steps, progress)
            # 3. the index, last.
            assert plan.new_index is not None and plan.final_index is not None
            new_index_bytes = plan.index_to_write()
            if new_index_bytes is not None:
                put_pointer(st, INDEX_NAME, new_index_bytes, steps)
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
                st.delete(f"{mp.model}/{n}/{f.path}" for n in mp.prune_versions for f in mp.target.versions[n].files)
                put_pointer(st, f"{mp.model}/{MANIFEST_NAME}", mp.final.dumps(), steps)
            for m, man in sorted(plan.prune_models.items()):
                keys = model_keys(m, man)
                st.delete(keys[:1])  # config first: nothing can load the model any more
                st.delete(keys[1:-1])
                st.delete(keys[-1:])
            put_pointer(st, INDEX_NAME, plan.final_index.dumps(), steps)
    finally:
        if progress is not None and uploads:
            progress.finish()
