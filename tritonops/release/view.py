"""What reconcile asks of releases: the per-(model, server) desired versions of one region.

Read fresh on every reconcile run (one LIST of ``tritonops-releases/`` plus one GET per record), so
a canary server's version override is re-applied after a Triton restart without anything to remember.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from tritonops.config import Config, ReleaseMode
from tritonops.release.policy import region_versions
from tritonops.release.state import ReleaseRecord, read_records
from tritonops.repo.manifest import ModelManifest
from tritonops.store import open_store


@dataclass
class RegionRelease:
    # None: no release record in the region and on-publish mode, i.e. exactly the behaviour before releases.
    versions: dict[str, dict[str, int]] | None
    digest: str = ""
    records: dict[str, ReleaseRecord] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def region_release(
    cfg: Config,
    region: str,
    manifests: Mapping[str, ModelManifest],
    configs: Mapping[str, str],
    records: Mapping[str, ReleaseRecord] | None = None,
) -> RegionRelease:
    rcfg = cfg.region(region)
    problems: list[str] = []
    if records is None:
        store = open_store(rcfg, region)
        try:
            found, problems = read_records(store)
        finally:
            store.close()
    else:
        found = dict(records)
    mode = cfg.release.mode
    if not found and mode is ReleaseMode.on_publish:
        return RegionRelease(None, "", {}, problems)
    servers = [s.name for s in rcfg.servers]
    versions = region_versions(mode, servers, manifests, configs, found)
    h = hashlib.sha256()
    h.update(mode.value.encode())
    for name, rec in sorted(found.items()):
        h.update(f"{name}\0{rec.digest()}\0".encode())
    return RegionRelease(versions, h.hexdigest(), found, problems)
