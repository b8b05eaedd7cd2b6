"""``tritonops route``: read what is served, render the region's Envoy configuration, apply it.

Also what reconcile calls: after every apply (new replicas join once READY and warmed up), and before
its unloads with the leaving replicas (they leave the routes first; Triton's unload then waits for the
requests already sent to them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.config import Config
from tritonops.errors import ConfigError
from tritonops.route.envoy import Admin, Writer, split_hostport
from tritonops.route.render import EnvoyConfig, Peer, RouteInputs, render
from tritonops.route.served import RegionServed, published_models, read_served

log = logging.getLogger(__name__)


@dataclass
class RouteReport:
    region: str
    version: str
    config: EnvoyConfig
    served: RegionServed
    known: set[str]
    peers: dict[str, list[str]]
    changed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False
    leaving: list[tuple[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_json(self, full: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "region": self.region,
            "version": self.version,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "served": self.served.by_server(),
            "unreachable": self.served.unreachable,
            "models": len(self.known | set(self.served.models)),
            "unplaced": sorted(self.known - set(self.served.models)),
            "peers": self.peers,
            "clusters": len(self.config.clusters),
            "leaving": [f"{s}/{m}" for s, m in self.leaving],
            "problems": self.problems,
            "duration_s": round(self.duration_s, 3),
        }
        if full:
            doc["envoy"] = self.config.to_json()
        return doc


def _settings(cfg: Config, region: str) -> Any:
    rs = cfg.region(region).route
    if rs is None:
        where = f"{cfg.source}: " if cfg.source else ""
        raise ConfigError(f"{where}regions.{region}.route: not configured (no Envoy for region {region!r})")
    return rs


def _peers(cfg: Config, region: str) -> tuple[list[Peer], list[str]]:
    """Peer regions' Envoys, each with the models it serves that may be answered from there."""
    peers: list[Peer] = []
    problems: list[str] = []
    for other in sorted(cfg.regions):
        ors = cfg.regions[other].route
        if other == region or ors is None:
            continue
        served = read_served(cfg, other)
        problems += [f"peer region {other!r}: server {s} not read: {why}" for s, why in served.unreachable.items()]
        # Residency on the data path: only models allowed both here and there.
        models = frozenset(m for m in served.models if cfg.is_allowed(m, region) and cfg.is_allowed(m, other))
        host, port = split_hostport(ors.peer_address or ors.listen)
        peers.append(Peer(other, host, port, models))
    return peers, problems


def route_inputs(
    cfg: Config,
    region: str,
    leaving: Iterable[tuple[str, str]] = (),
    weights: Mapping[str, Mapping[int, float]] | None = None,
) -> tuple[RouteInputs, RegionServed, list[str]]:
    rs = _settings(cfg, region)
    served = read_served(cfg, region)
    problems = [f"server {s} not read (left out of the routes): {why}" for s, why in served.unreachable.items()]
    published, problem = published_models(cfg, region)
    if problem:
        problems.append(problem)
    peers: list[Peer] = []
    if rs.failover:
        peers, more = _peers(cfg, region)
        problems += more
    known = frozenset(m for m in published | set(served.models) if cfg.is_allowed(m, region))
    if weights is None and rs.canary_by_traffic:
        weights = canary_weights(served, cfg.release.rollout.canary_share)
    host, port = split_hostport(rs.listen)
    inp = RouteInputs(
        region=region,
        listen_host=host,
        listen_port=port,
        served={m: {v: tuple(eps) for v, eps in vs.items()} for m, vs in served.models.items()
                if cfg.is_allowed(m, region)},
        known=known,
        peers=tuple(peers),
        retry_after_s=rs.retry_after_s,
        health_interval_s=rs.health_interval_s,
        config_dir=str(cfg.envoy_dir(region)),
        leaving=frozenset(leaving),
        weights=dict(weights or {}),
    )  # fmt: skip
    return inp, served, problems


def canary_weights(served: RegionServed, share: float) -> dict[str, dict[int, float]]:
    """Models whose servers hold two versions: the newest gets ``share`` of the requests."""
    out: dict[str, dict[int, float]] = {}
    for m, versions in served.models.items():
        if len(versions) == 2:
            old, new = sorted(versions)
            out[m] = {old: 1.0 - share, new: share}
    return out


def writer(cfg: Config, region: str) -> Writer:
    rs = _settings(cfg, region)
    d = cfg.envoy_dir(region)
    return Writer(d, Admin(rs.admin, region=region), region, log_path=d / "envoy.log")


def update_routes(
    cfg: Config,
    region: str,
    *,
    leaving: Iterable[tuple[str, str]] = (),
    weights: Mapping[str, Mapping[int, float]] | None = None,
    dry_run: bool = False,
) -> RouteReport:
    """Render the region's Envoy configuration from what its servers serve now and apply it; returns
    once Envoy's admin shows it accepted (RejectedUpdate: it kept the last good one)."""
    t0 = time.monotonic()
    leaving = sorted(set(leaving))
    inp, served, problems = route_inputs(cfg, region, leaving, weights)
    envoy_cfg = render(inp)
    report = RouteReport(
        region, envoy_cfg.version, envoy_cfg, served, set(inp.known),
        {p.region: sorted(p.models) for p in inp.peers}, problems=problems, dry_run=dry_run, leaving=leaving,
    )  # fmt: skip
    if not dry_run:
        report.changed = writer(cfg, region).apply(envoy_cfg)
    report.duration_s = time.monotonic() - t0
    log.info("region %s: routes %s (%s), %d clusters, %.2f s", region, envoy_cfg.version,
             ",".join(report.changed) or "unchanged", len(envoy_cfg.clusters), report.duration_s)  # fmt: skip
    return report


def routed_regions(cfg: Config) -> list[str]:
    return sorted(r for r, rc in cfg.regions.items() if rc.route is not None)


def envoy_dir_for(cfg: Config, region: str) -> Path:
    return cfg.envoy_dir(region)


@dataclass
class ReconcileRoutes:
    """What reconcile calls (``runner.Context.routes``): make-before-break around each apply.

    ``before_unload``: the replicas about to be unloaded leave the routes, and Envoy has accepted
    that, before any unload starts (Triton's unload then waits for the requests already sent).
    ``after_apply``: the routes from what is served now, so new replicas (READY, warmed up by the
    apply's health gate) join, and Envoy's own health checks admit each one only once it answers."""

    cfg: Config
    region: str
    last: RouteReport | None = None

    def before_unload(self, leaving: list[tuple[str, str]]) -> None:
        self.last = update_routes(self.cfg, self.region, leaving=leaving)

    def after_apply(self) -> None:
        self.last = update_routes(self.cfg, self.region)


def reconcile_routes(cfg: Config, region: str) -> ReconcileRoutes | None:
    """The hook for a region with a ``route:`` section, else None."""
    return ReconcileRoutes(cfg, region) if cfg.region(region).route is not None else None
