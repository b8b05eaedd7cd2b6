"""What a region's servers actually serve: every server's repository index, read all at once.

Routes follow this, never what the servers were told to load: a version is routed only once Triton
reports it READY. A server that does not answer is left out of the routes (and reported).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse

from tritonops.config import Config, ServerConfig
from tritonops.errors import TritonOpsError
from tritonops.repo.manifest import INDEX_NAME, RepoIndex
from tritonops.route.render import Endpoint
from tritonops.triton.client import READY, ControlClient

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 5.0


@dataclass
class RegionServed:
    region: str
    models: dict[str, dict[int, list[Endpoint]]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # server -> why

    def by_server(self) -> dict[str, dict[str, list[int]]]:
        out: dict[str, dict[str, list[int]]] = {}
        for m, versions in sorted(self.models.items()):
            for v, eps in sorted(versions.items()):
                for e in eps:
                    out.setdefault(e.server, {}).setdefault(m, []).append(v)
        return out


def endpoint(s: ServerConfig) -> Endpoint | None:
    """Where Envoy reaches ``s``: HTTP is required (health checks use it), gRPC is optional."""
    if not s.http_url:
        return None
    h = urlparse(s.http_url)
    host, port = h.hostname or "127.0.0.1", h.port or (443 if h.scheme == "https" else 80)
    grpc_port = None
    if s.grpc_url:
        g = urlparse(s.grpc_url if "://" in s.grpc_url else f"grpc://{s.grpc_url}")
        grpc_port = g.port
    return Endpoint(s.name, host, port, grpc_port)


def read_served(cfg: Config, region: str, timeout_s: float = READ_TIMEOUT_S) -> RegionServed:
    """Every server of ``region`` asked for its index at the same time; READY versions only."""
    servers = [s for s in cfg.region(region).servers if s.http_url]
    out = RegionServed(region)

    def read(s: ServerConfig) -> tuple[ServerConfig, list[tuple[str, int]] | str]:
        try:
            rows = ControlClient.from_server(s, "http", timeout_s=timeout_s).index()
        except TritonOpsError as e:
            return s, str(e)
        return s, [(r.name, r.version) for r in rows if r.state == READY and r.version is not None]

    if not servers:
        return out
    with ThreadPoolExecutor(min(16, len(servers)), thread_name_prefix="route-read") as pool:
        results = list(pool.map(read, servers))
    for s, got in results:
        if isinstance(got, str):
            out.unreachable[s.name] = got
            log.warning("region %s: server %s not read, left out of the routes: %s", region, s.name, got)
            continue
        ep = endpoint(s)
        assert ep is not None
        for model, version in got:
            out.models.setdefault(model, {}).setdefault(version, []).append(ep)
    return out


def published_models(cfg: Config, region: str) -> tuple[set[str], str]:
    """The models published in the region's bucket (its index), and a problem line if unreadable."""
    from tritonops.store import open_store

    try:
        store = open_store(cfg.region(region), region)
        try:
            raw = store.get(INDEX_NAME)
        finally:
            store.close()
    except TritonOpsError as e:
        return set(), f"region {region!r}: published models not read ({e})"
    if raw is None:
        return set(), ""
    try:
        return set(RepoIndex.loads(raw, f"{cfg.region(region).bucket}/{INDEX_NAME}").models), ""
    except TritonOpsError as e:
        return set(), str(e)
