"""Desired state (the region's published index + manifests + fleet policy) and actual state (servers).

Both are plain data: ``plan.make_plan(desired, actual)`` is a pure function of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.config import Config, Placement, RegionConfig, ServerConfig
from tritonops.errors import RepositoryError, TritonOpsError
from tritonops.fileio import atomic_write_bytes
from tritonops.memory.estimate import estimate_load_s
from tritonops.memory.probes import DeviceMemory
from tritonops.memory.servers import read_each
from tritonops.placement import PlacementPolicy
from tritonops.reconcile.ports import FootprintPort, MemoryPort, ServerControl
from tritonops.repo.manifest import CONFIG_NAME, INDEX_NAME, MANIFEST_NAME, ModelManifest, RepoIndex
from tritonops.store import ObjectStore, open_store

log = logging.getLogger(__name__)


# -- desired -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredModel:
    name: str
    version: int
    digest: str  # the version's digest: what quarantine and the ledger are keyed by
    placement: Placement
    footprint_bytes: int
    config_text: str = ""
    size_bytes: int = 0
    footprint_source: str = "measured"  # or "estimate" (never loaded: a guess from the disk size)

    @property
    def load_s(self) -> float:
        """Estimated load time (the ledger does not time loads yet): the one estimate, the capacity planner's too."""
        return estimate_load_s(self.footprint_bytes)


@dataclass(frozen=True)
class DemandInput:
    """The region's demand as the planner takes it (read by ``tritonops.demand.read_demand``)."""

    counts: dict[str, float]  # requests per model in the window
    complete: bool  # False: a source gave nothing, fresh or remembered: no demand-driven evictions
    policy: PlacementPolicy
    report: dict[str, Any]  # window, completeness and sources read: goes into the plan's JSON
    # Region placement (tritonops.placement.region): requests per window one replica serves, and
    # where that figure comes from ("measured" | "config"); replicas rules, model -> (min, max).
    served: dict[str, tuple[float, str]] = field(default_factory=dict)
    replicas: dict[str, tuple[int, int | None]] = field(default_factory=dict)


@dataclass
class ServerPolicy:
    name: str
    models: list[str]  # desired model names on this server, sorted
    budget_bytes: int | None
    headroom_bytes: int


@dataclass
class DesiredState:
    region: str
    index_digest: str
    published: set[str]  # every model in the region's index: what tritonops owns there
    models: dict[str, DesiredModel]
    servers: dict[str, ServerPolicy]
    problems: list[str] = field(default_factory=list)
    # Published but unreadable right now (corrupt or half-written manifest): left exactly as loaded.
    held: set[str] = field(default_factory=set)
    demand: DemandInput | None = None  # None: no ``demand:`` section for the region
    # Releases (tritonops.release): a server whose version of a model differs from the region's
    # (a canary), and a digest of the release records so a plan goes stale when a release moves.
    per_server: dict[str, dict[str, DesiredModel]] = field(default_factory=dict)
    release_digest: str = ""

    def model_on(self, server: str, model: str) -> DesiredModel | None:
        """What ``server`` should serve of ``model``: its canary override, else the region's."""
        return self.per_server.get(server, {}).get(model) or self.models.get(model)


@dataclass
class Published:
    """What a region's bucket publishes: the index, and each model's manifest and config (or an error)."""

    index: RepoIndex
    manifests: dict[str, ModelManifest]
    configs: dict[str, str]
    problems: list[str] = field(default_factory=list)


def desired_state(
    cfg: Config,
    region: str,
    published: Published,
    footprint: FootprintPort,
    versions: Mapping[str, Mapping[str, int]] | None = None,
    release_digest: str = "",
) -> DesiredState:
    """``versions``: the release's choice, model -> {"": region live, server: canary version}
    (``tritonops.release.policy.region_versions``); without it (or for a model it leaves out while
    others are in it, i.e. nothing live), the newest published version, as before releases."""
    rcfg = cfg.region(region)
    problems = list(published.problems)
    models: dict[str, DesiredModel] = {}
    per_server: dict[str, dict[str, DesiredModel]] = {}
    held: set[str] = set()
    for name in sorted(published.index.models):
        if not cfg.is_allowed(name, region):
            # Residency: published here by mistake or by hand; never load it in this region.
            problems.append(f"model {name!r} is published in region {region!r} but not allowed there")
            continue
        man = published.manifests.get(name)
        if man is None or man.latest() is None:
            held.add(name)  # its manifest problem is already in ``problems``
            continue
        chosen = dict(versions[name]) if versions is not None and name in versions else None
        if versions is not None and chosen is None:
            held.add(name)  # no live version in this region (its release names none published here)
            problems.append(f"model {name!r}: no live version released in region {region!r}")
            continue
        live = chosen.pop("", None) if chosen else None
        v = live if live is not None else man.latest()
        assert v is not None

        def dm(ver: int, name: str = name, man: Any = man) -> DesiredModel:
            entry = man.versions[ver]
            fp, source = footprint.prediction(name, entry.digest, entry.size)
            return DesiredModel(
                name,
                ver,
                entry.digest,
                cfg.placement(name),
                fp,
                published.configs.get(name, ""),
                entry.size,
                source,
            )

        models[name] = dm(v)
        for server, cv in sorted((chosen or {}).items()):
            if cv != v:
                per_server.setdefault(server, {})[name] = dm(cv)
    servers = {s.name: _policy(s, models, region, problems) for s in rcfg.servers}
    return DesiredState(
        region,
        published.index.digest,
        set(published.index.models),
        models,
        servers,
        problems,
        held,
        per_server=per_server,
        release_digest=release_digest,
    )


def _policy(
    s: ServerConfig, models: Mapping[str, DesiredModel], region: str, problems: list[str]
) -> ServerPolicy:
    if s.models:
        wanted = []
        for m in s.models:
            if m in models:
                wanted.append(m)
            else:
                problems.append(
                    f"server {s.name!r} in region {region!r} lists model {m!r}, which is not published"
                )
    else:
        wanted = list(models)
    return ServerPolicy(s.name, sorted(set(wanted)), s.memory_budget_bytes, s.headroom_bytes)


def read_published(rcfg: RegionConfig, region: str, cache_dir: Path | None = None) -> Published:
    """One GET for the index, then a manifest and a config per model whose digest is not in ``cache_dir``
    (a published model digest covers its config and every version, so a cached copy is exact): a run
    with nothing changed costs one GET. Corrupt manifests are reported, not raised."""
    store = open_store(rcfg, region)
    try:
        return _read_published(store, rcfg, region, cache_dir)
    finally:
        store.close()


READ_WORKERS = 16  # manifests and configs read at once on a cold cache (a new host, a large publish)


def _read_published(store: ObjectStore, rcfg: RegionConfig, region: str, cache_dir: Path | None) -> Published:
    def get(key: str) -> bytes:
        data = store.get(key)
        if data is None:
            raise FileNotFoundError(key)
        return data

    where = f"region {region!r} ({rcfg.bucket})"
    try:
        raw = get(INDEX_NAME)
    except FileNotFoundError:
        return Published(RepoIndex(), {}, {}, [f"{where}: no {INDEX_NAME} published yet"])
    index = RepoIndex.loads(raw, f"{rcfg.bucket}/{INDEX_NAME}")

    def read(name: str) -> tuple[ModelManifest, str] | str:
        """A model's manifest and config from the bucket, or the line saying why not."""
        want = str(index.models[name]["digest"])
        try:
            man = ModelManifest.loads(get(f"{name}/{MANIFEST_NAME}"), f"{rcfg.bucket}/{name}/{MANIFEST_NAME}")
            if man.digest != want:
                raise RepositoryError(
                    f"{rcfg.bucket}/{name}/{MANIFEST_NAME}: digest differs from the index (publish in progress?)"
                )
            config = get(f"{name}/{CONFIG_NAME}").decode()
        except FileNotFoundError as e:
            return f"{where}: model {name!r}: {e} missing"
        except (RepositoryError, UnicodeDecodeError) as e:
            return f"{where}: model {name!r}: {e}"
        _cache_put(cache_dir, name, want, man, config)
        return man, config

    names = sorted(index.models)
    found: dict[str, tuple[ModelManifest, str] | str] = {
        n: c for n in names if (c := _cache_get(cache_dir, n, str(index.models[n]["digest"]))) is not None
    }
    missing = [n for n in names if n not in found]
    if missing:
        # One GET after another cost a new host 2 round trips per model: 100 s for 1,000 models at 50 ms.
        with ThreadPoolExecutor(min(READ_WORKERS, len(missing)), thread_name_prefix="published") as pool:
            found.update(zip(missing, pool.map(read, missing), strict=True))
    manifests: dict[str, ModelManifest] = {}
    configs: dict[str, str] = {}
    problems: list[str] = []
    for name in names:
        got = found[name]
        if isinstance(got, str):
            problems.append(got)
        else:
            manifests[name], configs[name] = got
    return Published(index, manifests, configs, problems)


def _cache_get(cache_dir: Path | None, model: str, digest: str) -> tuple[ModelManifest, str] | None:
    if cache_dir is None:
        return None
    try:
        d = json.loads((cache_dir / f"{model}.json").read_text())
        if d.get("digest") != digest:
            return None
        man = ModelManifest.from_json(d["manifest"], str(cache_dir / f"{model}.json"))
        return (man, str(d["config"])) if man.digest == digest else None
    except (OSError, ValueError, KeyError, TypeError, RepositoryError):
        return None  # absent or damaged: read it from the bucket again


def _cache_put(cache_dir: Path | None, model: str, digest: str, man: ModelManifest, config: str) -> None:
    if cache_dir is None:
        return
    doc = {"digest": digest, "manifest": man.to_json(), "config": config}
    atomic_write_bytes(cache_dir / f"{model}.json", json.dumps(doc, sort_keys=True).encode())


# -- actual ------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    name: str
    versions: dict[int, str]  # version -> state; only READY versions count as loaded
    footprint_bytes: int
    last_inference_ms: int = 0

    @property
    def ready_versions(self) -> list[int]:
        return sorted(v for v, s in self.versions.items() if s == "READY")


@dataclass
class ServerActual:
    name: str
    reachable: bool
    error: str = ""
    loaded: dict[str, LoadedModel] = field(default_factory=dict)  # owned models only
    devices: list[DeviceMemory] = field(default_factory=list)


@dataclass
class ActualState:
    servers: dict[str, ServerActual]
    quarantined: set[tuple[str, str, str]] = field(default_factory=set)  # (server, model, digest)
    owned: set[str] = field(default_factory=set)  # models tritonops loaded earlier (journaled)

    def fingerprint(self, desired: DesiredState) -> str:
        """What a plan depends on, minus memory (which moves all the time): apply refuses a plan whose
        fingerprint differs from a fresh one."""
        doc: dict[str, Any] = {
            "index": desired.index_digest,
            "servers": {
                n: {
                    "reachable": s.reachable,
                    "loaded": {m: sorted(lm.ready_versions) for m, lm in sorted(s.loaded.items())},
                }
                for n, s in sorted(self.servers.items())
            },
            "quarantined": sorted(self.quarantined),
        }
        if desired.release_digest:  # only with releases, so fingerprints from before them still match
            doc["release"] = desired.release_digest
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _loaded_footprint(model: str, versions: list[int], published: Published, footprint: FootprintPort) -> int:
    # Every READY version takes memory; a version no longer published is guessed at its last known size (0).
    man = published.manifests.get(model)
    total = 0
    for v in versions:
        entry = man.versions.get(v) if man else None
        total += (
            footprint.predict(model, entry.digest, entry.size) if entry else footprint.predict(model, "", 0)
        )
    return total


def gather_actual(
    desired: DesiredState,
    controls: Mapping[str, ServerControl],
    memories: Mapping[str, MemoryPort | None],
    footprint: FootprintPort,
    published: Published,
    quarantined: Iterable[tuple[str, str, str]] = (),
    owned: Iterable[str] = (),
) -> ActualState:
    """Read every server, all at once (:func:`tritonops.memory.servers.read_each`); a server down or
    timing out is recorded as unreachable, never raised."""
    owned_set = set(owned) | desired.published

    def read(name: str) -> ServerActual:
        ctl = controls[name]
        try:
            rows = ctl.index()
            stats = ctl.last_inference_ms()
        except TritonOpsError as e:
            return ServerActual(name, False, str(e))
        sa = ServerActual(name, True)
        for r in rows:
            if r.name not in owned_set:
                continue
            lm = sa.loaded.setdefault(r.name, LoadedModel(r.name, {}, 0, stats.get(r.name, 0)))
            if r.version is not None:
                lm.versions[r.version] = r.state
        for m, lm in list(sa.loaded.items()):
            if not lm.ready_versions:
                del sa.loaded[m]
                continue
            lm.footprint_bytes = _loaded_footprint(m, lm.ready_versions, published, footprint)
        mem = memories.get(name)
        if mem is not None:
            try:
                sa.devices = mem.devices()
            except TritonOpsError as e:
                log.warning("server %s: memory not measured: %s", name, e)
        return sa

    servers = read_each(sorted(desired.servers), read)
    return ActualState(servers, set(quarantined), set(owned))
