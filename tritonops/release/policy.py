"""Which version is live: pure functions of a region's release records, manifests and configs.

Reconcile (desired state), sync (the config pointer it writes) and ``release status`` all ask these
functions, so they never disagree about what "live" means.

- ``explicit`` mode: the record's ``live``; a model without a record keeps the version its published
  config.pbtxt points at (a model's first publish in a region is its first release: nothing to protect).
- ``on-publish`` mode: without a record, the newest published version (the behaviour before releases);
  with one (after a promote or rollback), the record's ``live``, unless a version newer than the
  record's ``watermark`` was published since: publishing it released it. A blocked digest is never live.
  The version such a publish replaced is the rollback target (``previous_version``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tritonops.config import ReleaseMode
from tritonops.errors import RepositoryError
from tritonops.release.state import ReleaseRecord
from tritonops.repo.manifest import ModelManifest

# In the per-server map returned by ``region_versions``, the region-wide live version.
REGION = ""


def config_pointer(config_text: str, source: str = "config.pbtxt") -> list[int]:
    """The versions a published config.pbtxt's ``version_policy { specific }`` names ([] otherwise)."""
    from tritonops.repo.model_config import parse_config_text

    try:
        cfg = parse_config_text(config_text, source)
    except RepositoryError:
        return []
    if cfg.version_policy.WhichOneof("policy_choice") != "specific":
        return []
    return sorted(int(v) for v in cfg.version_policy.specific.versions)


def is_blocked(rec: ReleaseRecord | None, man: ModelManifest, version: int) -> bool:
    entry = man.versions.get(version)
    return bool(rec and entry and entry.digest in rec.blocked)


def live_version(
    mode: ReleaseMode, rec: ReleaseRecord | None, man: ModelManifest, config_text: str = ""
) -> int | None:
    newest = man.latest()
    if newest is None:
        return None
    fresh = rec is not None and mode is ReleaseMode.on_publish and newest > rec.watermark
    if fresh and not is_blocked(rec, man, newest):
        return newest
    if rec is not None and rec.live in man.versions:
        return rec.live
    if rec is None and mode is ReleaseMode.explicit:
        pointed = [v for v in config_pointer(config_text) if v in man.versions]
        if pointed:
            return pointed[-1]
    if rec is not None and rec.live is not None:
        return None  # the record names a version this bucket does not have: serve nothing new
    return None if is_blocked(rec, man, newest) else newest


def previous_version(
    mode: ReleaseMode, rec: ReleaseRecord | None, man: ModelManifest, config_text: str = ""
) -> int | None:
    """The rollback target: the version live before the live one.

    A promote or rollback records it. In on-publish mode a publish releases the newest version
    without writing a record, so the version it replaced follows from what was published: the
    record's live version (a publish after a rollback), else the newest unblocked version below."""
    live = live_version(mode, rec, man, config_text)
    newest = man.latest()
    released_by_publish = (
        mode is ReleaseMode.on_publish and live is not None and live == newest
        and (rec is None or newest > rec.watermark)
    )  # fmt: skip
    if not released_by_publish:
        return rec.previous if rec is not None else None
    if rec is not None and rec.live is not None and rec.live != live:
        return rec.live if rec.live in man.versions else None
    below = [v for v in man.versions if live is not None and v < live and not is_blocked(rec, man, v)]
    return max(below, default=None)


def canary_servers(servers: Sequence[str], share: float) -> list[str]:
    """The first ceil(share x n) servers by name (at least one): stable, so a rerun picks the same."""
    names = sorted(servers)
    k = max(1, math.ceil(share * len(names) - 1e-9))
    return names[:k]


def region_versions(
    mode: ReleaseMode,
    servers: Sequence[str],
    manifests: Mapping[str, ModelManifest],
    configs: Mapping[str, str],
    records: Mapping[str, ReleaseRecord],
) -> dict[str, dict[str, int]]:
    """model -> {REGION: live, server: canary version}; a model with no live version is left out."""
    out: dict[str, dict[str, int]] = {}
    for name, man in sorted(manifests.items()):
        rec = records.get(name)
        live = live_version(mode, rec, man, configs.get(name, ""))
        if live is None:
            continue
        per: dict[str, int] = {REGION: live}
        c = rec.canary if rec is not None else None
        if c is not None and c.version in man.versions and not is_blocked(rec, man, c.version):
            for s in c.servers:
                if s in servers:
                    per[s] = c.version
        out[name] = per
    return out
