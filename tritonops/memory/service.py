"""The service layer behind ``tritonops load|unload|mem|status``: library functions returning plain dicts.

Servers are named by a configured server name or by URL (``http://host:port``, ``grpc://host:port``
or a bare ``host:port``, taken as HTTP). A URL that matches a configured server gets its metrics URL
and region from the config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tritonops.config import Config, RegionConfig, ServerConfig
from tritonops.errors import MemoryProbeError, RepositoryError, StoreError, TritonError
from tritonops.memory.ledger import FootprintKey, FootprintLedger
from tritonops.memory.loads import LoadResult, measured_load, measured_unload
from tritonops.memory.probes import MemoryProbe, probe_for_server
from tritonops.memory.servers import read_each, read_server
from tritonops.repo.manifest import MANIFEST_NAME, ModelManifest
from tritonops.store import open_store
from tritonops.triton.client import READY, ControlClient

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".tritonops")


def resolve_server(cfg: Config | None, ref: str) -> tuple[ServerConfig, str | None]:
    """(server, region name or None) for a configured server name or a URL."""
    if cfg is not None:
        for rname, region in sorted(cfg.regions.items()):
            for s in region.servers:
                urls = {s.http_url, s.grpc_url, f"grpc://{s.grpc_url}" if s.grpc_url else None}
                if ref == s.name or ref.rstrip("/") in {u.rstrip("/") for u in urls if u}:
                    return s, rname
    if ref.startswith(("grpc://", "grpcs://")):
        return ServerConfig(name=ref, grpc_url=ref.split("://", 1)[1]), None
    if "://" not in ref:
        if ":" not in ref:
            known = ""
            if cfg is not None:
                names = sorted(s.name for r in cfg.regions.values() for s in r.servers)
                known = f" (configured servers: {', '.join(names) or 'none'})"
            raise TritonError(f"server {ref!r}: not a configured server name nor a host:port URL{known}")
        ref = f"http://{ref}"
    try:
        return ServerConfig(name=ref, http_url=ref), None
    except ValueError as e:
        raise TritonError(f"server {ref!r}: not a valid URL ({e})") from None


def client_for(server: ServerConfig, protocol: str | None = None, timeout_s: float = 10.0) -> ControlClient:
    return ControlClient.from_server(server, protocol, timeout_s=timeout_s)


def ledger_for(cfg: Config | None) -> FootprintLedger:
    return FootprintLedger.in_state_dir(cfg.state_path if cfg is not None else DEFAULT_STATE_DIR.absolute())


def _probe(server: ServerConfig, client: ControlClient, prefer: str | None) -> MemoryProbe:
    return probe_for_server(client.url, server.metrics_url, prefer=prefer)


def bucket_versions(region: RegionConfig, model: str) -> dict[int, tuple[str, int]]:
    """version -> (digest, size) from the model's manifest in the region's bucket; {} when it has none."""
    key = f"{model}/{MANIFEST_NAME}"
    store = open_store(region)
    try:
        raw = store.get(key)
    except StoreError as e:  # a store we cannot read: predict without it
        log.info("no manifest for model %r in %s (%s): predicting from nothing", model, region.bucket, e)
        return {}
    finally:
        store.close()
    if raw is None:
        return {}
    m = ModelManifest.loads(raw, f"{region.bucket}/{key}")
    return {n: (v.digest, v.size) for n, v in m.versions.items()}


def load_model(
    cfg: Config | None, server_ref: str, model: str, *, protocol: str | None = None,
    probe: str | None = None, timeout_s: float = 10.0,
) -> dict[str, Any]:  # fmt: skip
    """Load ``model`` on a server, measuring its footprint into the ledger."""
    server, region = resolve_server(cfg, server_ref)
    client = client_for(server, protocol, timeout_s)
    p = _probe(server, client, probe)
    version = digest = size = None
    if cfg is not None and region is not None:
        try:
            known = bucket_versions(cfg.region(region), model)
        except (RepositoryError, StoreError) as e:
            log.warning("%s", e)
            known = {}
        if known:
            version = max(known)
            digest, size = known[version]
    res: LoadResult = measured_load(client, p, ledger_for(cfg), model, version=version, digest=digest,
                                    size_bytes=size)  # fmt: skip
    return {"server": server.name, "probe": p.source, **res.to_json()}


def unload_model(
    cfg: Config | None, server_ref: str, model: str, *, protocol: str | None = None, probe: str | None = None,
    timeout_s: float = 10.0, wait_s: float = 120.0, dependents: bool = False, wait: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Unload ``model``; with ``wait`` return only when the index and the memory say it is gone."""
    server, _ = resolve_server(cfg, server_ref)
    client = client_for(server, protocol, timeout_s)
    if not wait:
        res = client.unload(model, unload_dependents=dependents)
        return {"server": server.name, "model": model, "waited": False, "seconds": round(res.seconds, 3)}
    p = _probe(server, client, probe)
    res = measured_unload(client, p, ledger_for(cfg), model, unload_dependents=dependents, timeout_s=wait_s)
    return {
        "server": server.name, "model": model, "waited": True, "probe": p.source,
        "released_bytes": res.released_bytes, "seconds": round(res.seconds, 3),
    }  # fmt: skip


def server_memory(
    cfg: Config | None, server: ServerConfig, client: ControlClient, probe: str | None = None
) -> dict[str, Any]:
    """Devices, per loaded model version its measured and predicted footprint, and leaks."""
    ledger = ledger_for(cfg)
    out: dict[str, Any] = {"server": server.name, "url": client.url}
    triton_version = client.triton_version()
    states = client.index()
    try:
        p = _probe(server, client, probe)
        out["probe"] = p.source
        out["devices"] = [d.to_json() for d in p.devices()]
        device_type = p.device_type()
    except MemoryProbeError as e:
        out["probe"] = None
        out["devices"] = []
        out["error"] = str(e)
        device_type = "unknown"
    models = []
    for m in states:
        if m.state != READY:
            continue
        pred = ledger.predict(FootprintKey(m.name, m.version, None, device_type, triton_version))
        models.append({
            "model": m.name, "version": m.version,
            "footprint_bytes": ledger.server_footprint(server.name, m.name, m.version),
            "predicted_bytes": pred.bytes, "predicted_source": pred.source,
        })  # fmt: skip
    out["models"] = models
    out["leaked_bytes"] = ledger.leaked_bytes(server.name)
    out["triton_version"] = triton_version
    return out


def memory_report(
    cfg: Config | None, server_ref: str, *, protocol: str | None = None, probe: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:  # fmt: skip
    server, _ = resolve_server(cfg, server_ref)
    client = client_for(server, protocol, timeout_s)
    return {"servers": [server_memory(cfg, server, client, probe)]}


def region_status(cfg: Config, region: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Every server of ``region``, read at once (:mod:`tritonops.memory.servers`): health, Triton
    version, models with versions and states, memory.

    A server that cannot be reached is reported with its error; the others are still reported.
    """
    servers = {s.name: s for s in cfg.region(region).servers}
    views = read_each(list(servers), lambda name: read_server(servers[name], timeout_s=timeout_s))
    return {"region": region, "servers": [v.to_json() for v in views.values()]}
