"""Reconcile's bucket gate: a version is checked against its manifest before any server loads it.

Only versions the plan would load or reload are checked (a no-op run checks nothing). A version
whose objects differ is refused: the model is held (what serves keeps serving), the refusal is a
problem in the plan, a region-wide entry in the quarantine, and a non-zero exit. Every later run
checks it again (one LIST, plus HEADs), so after ``sync --repair`` the next run loads it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tritonops.config import RegionConfig
from tritonops.reconcile.plan import Plan
from tritonops.reconcile.records import Quarantine
from tritonops.reconcile.state import DesiredState, Published
from tritonops.repo.manifest import ModelManifest
from tritonops.store import open_store
from tritonops.store.verify import Mismatch, VerifyCache, verify_version

log = logging.getLogger(__name__)

# The quarantine's "server" for a refusal that concerns the bucket, not one server.
BUCKET_SERVER = "(bucket)"
LOAD_KINDS = ("load", "reload")
CHECK_VERSIONS_AT_ONCE = 8


def planned_loads(plan: Plan) -> dict[str, int]:
    """Model -> version for every load or reload in the plan."""
    return {a.model: a.version for a in plan.actions if a.kind in LOAD_KINDS and a.version is not None}


def check_loads(
    rcfg: RegionConfig,
    region: str,
    loads: dict[str, int],
    published: Published,
    cache_path: Path,
    full: bool = False,
) -> dict[str, list[Mismatch]]:
    """Model -> mismatches of its planned version (models that passed are left out)."""
    if not loads:
        return {}
    cache = VerifyCache(cache_path)
    store = open_store(rcfg, region)
    # not in the manifests: not loadable anyway (the plan holds it)
    jobs = [(m, v, man) for m, v in sorted(loads.items()) if (man := published.manifests.get(m)) is not None]

    def check(job: tuple[str, int, ModelManifest]) -> list[Mismatch]:
        return verify_version(store, job[2], job[1], full=full, cache=cache, region=region)

    try:
        # Versions are checked side by side (a LIST and a HEAD per file each): a cold start checks them all.
        with ThreadPoolExecutor(min(CHECK_VERSIONS_AT_ONCE, len(jobs) or 1), thread_name_prefix="gate") as pool:
            found = list(pool.map(check, jobs))
    finally:
        store.close()
    return {m: bad for (m, _, _), bad in zip(jobs, found, strict=True) if bad}


def refuse(
    desired: DesiredState, refused: dict[str, list[Mismatch]], quarantine: Quarantine | None
) -> list[str]:
    """Hold every refused model (so what serves keeps serving) and record why; returns one line each."""
    lines = []
    for model, bad in sorted(refused.items()):
        dm = desired.models.pop(model, None)
        desired.held.add(model)
        for pol in desired.servers.values():
            pol.models = [m for m in pol.models if m != model]
        more = f" (and {len(bad) - 1} more objects)" if len(bad) > 1 else ""
        line = f"refused to load: {bad[0].line()}{more}"
        desired.problems.append(line)
        lines.append(line)
        if dm is not None and quarantine is not None:
            quarantine.refuse(BUCKET_SERVER, model, dm.version, dm.digest, line)
        log.warning("%s", line)
    return lines


def clear_passed(
    desired: DesiredState,
    loads: dict[str, int],
    refused: dict[str, list[Mismatch]],
    quarantine: Quarantine | None,
) -> None:
    """Versions that passed the check are no longer refused (after ``sync --repair``)."""
    if quarantine is None:
        return
    for model in sorted(set(loads) - set(refused)):
        dm = desired.models.get(model)
        if dm is not None:
            quarantine.clear(BUCKET_SERVER, model, dm.digest)
