"""Promote and roll back in one region: verify, write the release record, then the pointer Triton reads.

Order, so a reader never sees a pointer to something incomplete (pointers last):
1. the version's objects in the region's bucket are checked against its manifest (size + sha256);
2. the release record (what reconcile reads) is written;
3. the model's config.pbtxt is rewritten with ``version_policy { specific { versions: [live] } }``.
Each step is idempotent, so a promote killed between 2 and 3 is finished by running it again, and
``release status`` reports a pointer that lags its record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tritonops.config import Config, ReleaseMode
from tritonops.errors import StoreError
from tritonops.fileio import sha256_bytes
from tritonops.release.policy import canary_servers, config_pointer, live_version, previous_version
from tritonops.release.state import Canary, ReleaseError, ReleaseRecord, read_record, write_record
from tritonops.repo.manifest import CONFIG_NAME, MANIFEST_NAME, ModelManifest
from tritonops.store import open_store
from tritonops.store.base import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class RegionModel:
    """One model as a region's bucket holds it: manifest, published config, release record."""

    region: str
    store: ObjectStore
    manifest: ModelManifest
    config_text: str
    record: ReleaseRecord | None
    mode: ReleaseMode

    @property
    def live(self) -> int | None:
        return live_version(self.mode, self.record, self.manifest, self.config_text)

    @property
    def previous(self) -> int | None:
        return previous_version(self.mode, self.record, self.manifest, self.config_text)


def read_region_model(cfg: Config, region: str, model: str, store: ObjectStore | None = None) -> RegionModel:
    store = store or open_store(cfg.region(region), region)
    where = f"region {region!r} ({store.url})"
    raw = store.get(f"{model}/{MANIFEST_NAME}")
    if raw is None:
        raise ReleaseError(f"{where}: model {model!r} is not published there (run `tritonops sync`)")
    man = ModelManifest.loads(raw, f"{store.url}/{model}/{MANIFEST_NAME}")
    conf = store.get(f"{model}/{CONFIG_NAME}")
    if conf is None:
        raise ReleaseError(f"{where}: model {model!r} has no {CONFIG_NAME} (publish incomplete?)")
    return RegionModel(
        region, store, man, conf.decode("utf-8", "replace"), read_record(store, model), cfg.release.mode
    )


def verify_version(rm: RegionModel, version: int) -> None:
    """Every file of ``version`` is in the bucket with the manifest's size and sha256 (S3 metadata)."""
    model = rm.manifest.model
    entry = rm.manifest.versions.get(version)
    if entry is None:
        have = ", ".join(str(v) for v in sorted(rm.manifest.versions)) or "none"
        raise ReleaseError(
            f"region {rm.region!r}: model {model!r} version {version} is not published there "
            f"(published: {have})"
        )
    for f in entry.files:
        key = f"{model}/{version}/{f.path}"
        info = rm.store.head(key)
        if info is None:
            raise ReleaseError(f"region {rm.region!r}: {rm.store.url}/{key} is missing; refusing to release")
        if info.size != f.size or (info.sha256 is not None and info.sha256 != f.sha256):
            raise ReleaseError(
                f"region {rm.region!r}: {rm.store.url}/{key} differs from the manifest "
                f"(size {info.size} vs {f.size}); refusing to release"
            )
        if info.sha256 is None and rm.store.hash_bytes(key) != f.sha256:
            raise ReleaseError(f"region {rm.region!r}: {rm.store.url}/{key}: sha256 differs from the manifest")


def check_not_blocked(rm: RegionModel, version: int) -> None:
    digest = rm.manifest.versions[version].digest
    if rm.record is not None and digest in rm.record.blocked:
        raise ReleaseError(
            f"region {rm.region!r}: model {rm.manifest.model!r} version {version} is blocked "
            f"({rm.record.blocked[digest]}); publish a version with different bytes"
        )


def write_pointer(rm: RegionModel, live: int) -> bool:
    """config.pbtxt's version_policy -> [live]; False when it already says so (no write)."""
    from tritonops.store.pubconfig import published_config

    if config_pointer(rm.config_text) == [live]:
        return False
    model = rm.manifest.model
    data = published_config(
        rm.config_text, sorted(rm.manifest.versions), f"{rm.store.url}/{model}/{CONFIG_NAME}", [live]
    )
    rm.store.put_bytes(f"{model}/{CONFIG_NAME}", data, sha256_bytes(data))
    rm.config_text = data.decode()
    return True


@dataclass
class ReleaseChange:
    region: str
    model: str
    action: str  # promote | canary | rollback | clear-canary
    live_before: int | None
    live_after: int | None
    canary: dict[str, Any] | None = None
    pointer_written: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "model": self.model,
            "action": self.action,
            "live_before": self.live_before,
            "live_after": self.live_after,
            "canary": self.canary,
            "pointer_written": self.pointer_written,
            "notes": self.notes,
        }


def _base_record(rm: RegionModel) -> ReleaseRecord:
    rec = rm.record or ReleaseRecord(rm.manifest.model)
    rec.live = rm.live  # make the effective live explicit (on-publish: a newer publish was live)
    rec.watermark = max(rm.manifest.versions, default=0)
    return rec


def set_live(rm: RegionModel, version: int, action: str = "promote", rollout: Any = "keep") -> ReleaseChange:
    """Make ``version`` live in the region (verified first; record, then pointer). Idempotent."""
    verify_version(rm, version)
    if action == "promote":
        check_not_blocked(rm, version)
    before = rm.live
    rec = _base_record(rm)
    if before is not None and before != version:
        rec.previous = before
    rec.live = version
    rec.canary = None
    if rollout != "keep":
        rec.rollout = rollout
    write_record(rm.store, rec)
    rm.record = rec
    ch = ReleaseChange(rm.region, rec.model, action, before, version)
    ch.pointer_written = write_pointer(rm, version)
    return ch


def set_canary(
    rm: RegionModel, version: int, servers: list[str], rollout: Any = "keep"
) -> ReleaseChange:
    """``servers`` serve ``version``, the rest of the region keeps the live one. Idempotent."""
    verify_version(rm, version)
    check_not_blocked(rm, version)
    before = rm.live
    rec = _base_record(rm)
    rec.canary = Canary(version, sorted(servers))
    if rollout != "keep":
        rec.rollout = rollout
    write_record(rm.store, rec)
    rm.record = rec
    ch = ReleaseChange(rm.region, rec.model, "canary", before, before, rec.canary.to_json())
    if before is not None:
        ch.pointer_written = write_pointer(rm, before)
    return ch


def promote(cfg: Config, model: str, version: int, region: str, servers: str = "all") -> ReleaseChange:
    rm = read_region_model(cfg, region, model)
    try:
        if servers == "canary":
            names = [s.name for s in cfg.region(region).servers]
            return set_canary(rm, version, canary_servers(names, cfg.release.rollout.canary_share))
        return set_live(rm, version)
    finally:
        rm.store.close()


def rollback(
    cfg: Config, model: str, region: str, to: int | None = None, block: str | None = None
) -> ReleaseChange:
    """Back to the previous live version (or ``to``); a canary is withdrawn. ``block``: also block
    the digest being rolled back from, with that reason (the rollout controller does)."""
    rm = read_region_model(cfg, region, model)
    try:
        cur = rm.live
        target = to if to is not None else rm.previous
        if target is None:
            raise ReleaseError(
                f"region {region!r}: model {model!r} has no previous live version to roll back to; "
                "name one with --to N"
            )
        if target == cur and (rm.record is None or rm.record.canary is None):
            ch = ReleaseChange(region, model, "rollback", cur, cur)
            ch.notes.append(f"version {cur} is already live")
            ch.pointer_written = write_pointer(rm, target)
            return ch
        if block and rm.record is not None and rm.record.canary is not None:
            bad = rm.manifest.versions.get(rm.record.canary.version)
            if bad is not None:
                rm.record.blocked[bad.digest] = block
        if block and cur is not None and cur != target and cur in rm.manifest.versions:
            rec = rm.record or ReleaseRecord(model)
            rec.blocked[rm.manifest.versions[cur].digest] = block
            rm.record = rec
        ch = set_live(rm, target, "rollback")
        if ch.live_before == ch.live_after:
            ch.notes.append("canary withdrawn")
        return ch
    except StoreError:
        raise
    finally:
        rm.store.close()


def served_versions(cfg: Config, region: str, models: list[str]) -> dict[str, dict[str, Any]]:
    """server -> {"reachable", "error", "models": {model: [READY versions]}} as Triton reports it."""
    from tritonops.errors import TritonOpsError
    from tritonops.triton.client import ControlClient

    out: dict[str, dict[str, Any]] = {}
    for s in cfg.region(region).servers:
        try:
            rows = ControlClient.from_server(s, timeout_s=5.0).index()
        except TritonOpsError as e:
            out[s.name] = {"reachable": False, "error": str(e), "models": {}}
            continue
        served: dict[str, list[int]] = {m: [] for m in models}
        for r in rows:
            if r.name in served and r.state == "READY" and r.version is not None:
                served[r.name].append(r.version)
        out[s.name] = {"reachable": True, "error": "", "models": {m: sorted(v) for m, v in served.items()}}
    return out


def region_status(cfg: Config, region: str, model: str | None = None) -> dict[str, Any]:
    """Every released or published model of the region (or just ``model``): live, previous, canary,
    blocked, the pointer Triton reads, and what each server actually serves."""
    from tritonops.release.state import read_records
    from tritonops.repo.manifest import INDEX_NAME, RepoIndex

    store = open_store(cfg.region(region), region)
    try:
        raw = store.get(INDEX_NAME)
        published = sorted(RepoIndex.loads(raw, f"{store.url}/{INDEX_NAME}").models) if raw else []
        records, problems = read_records(store)
        names = [model] if model else sorted(set(published) | set(records))
        if model and model not in published:
            raise ReleaseError(f"region {region!r}: model {model!r} is not published there")
        models: dict[str, Any] = {}
        for name in names:
            try:
                rm = read_region_model(cfg, region, name, store)
            except ReleaseError as e:
                problems.append(str(e))
                continue
            rec = rm.record
            live = rm.live
            pointer = config_pointer(rm.config_text)
            models[name] = {
                "live": live,
                "previous": rm.previous,
                "canary": rec.canary.to_json() if rec and rec.canary else None,
                "blocked": dict(rec.blocked) if rec else {},
                "published_versions": sorted(rm.manifest.versions),
                "pointer": pointer,
                "pointer_lags": live is not None and pointer != [live],
                "rollout": rec.rollout if rec else None,
                "record": rec is not None,
            }
    finally:
        store.close()
    servers = served_versions(cfg, region, sorted(models))
    return {"region": region, "mode": cfg.release.mode.value, "models": models, "servers": servers,
            "problems": problems}  # fmt: skip
