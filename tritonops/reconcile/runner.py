"""Wiring: config -> ports -> desired/actual -> plan -> apply, with lock, journal and metrics.

Public entry points (what the CLI calls): ``make_region_plan``, ``apply_plan_file``, ``reconcile``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.config import Config
from tritonops.errors import PlanError, TritonOpsError
from tritonops.reconcile import metrics
from tritonops.reconcile.apply import ActionResult, apply_plan
from tritonops.reconcile.lock import region_lock
from tritonops.reconcile.plan import Plan, make_plan
from tritonops.reconcile.ports import FootprintPort, MemoryPort, ServerControl, SizeGuess
from tritonops.reconcile.state import (
    ActualState,
    DesiredState,
    Published,
    desired_state,
    gather_actual,
    read_published,
)
from tritonops.reconcile.store import Journal, Owned, Quarantine, region_dir
from tritonops.repo.manifest import atomic_write_bytes, utc_now

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class Ports:
    controls: dict[str, ServerControl]
    memories: dict[str, MemoryPort | None]
    footprint: FootprintPort


def default_ports(cfg: Config, region: str) -> Ports:
    """The control stage's ControlClient, the best memory probe per server (NVML, metrics, host) and the
    footprint ledger in the state dir (measured footprints; its estimate for models never loaded)."""
    from tritonops.memory.ledger import FootprintLedger
    from tritonops.reconcile.adapters import ControlAdapter, LedgerFootprint, ProbeMemory, probe_or_none

    rcfg = cfg.region(region)
    ledger = FootprintLedger.in_state_dir(cfg.state_path)
    controls: dict[str, ServerControl] = {}
    memories: dict[str, MemoryPort | None] = {}
    footprint: FootprintPort | None = None
    for s in rcfg.servers:
        probe = probe_or_none(s)
        ctl = ControlAdapter(s, probe, ledger)
        controls[s.name] = ctl
        memories[s.name] = ProbeMemory(probe) if probe is not None else None
        if footprint is None and probe is not None:
            # A server down leaves the choice to the next one; the plan skips and reports it.
            with contextlib.suppress(TritonOpsError):
                footprint = LedgerFootprint(ledger, probe.device_type(), ctl.client.triton_version())
    return Ports(controls, memories, footprint or SizeGuess())


@dataclass
class Context:
    cfg: Config
    region: str
    ports: Ports
    dir: Path
    quarantine: Quarantine = field(init=False)
    owned: Owned = field(init=False)
    journal: Journal = field(init=False)

    def __post_init__(self) -> None:
        self.quarantine = Quarantine(self.dir / "quarantine.json")
        self.owned = Owned(self.dir / "owned.json")
        self.journal = Journal(self.dir / "journal.jsonl")


def context(cfg: Config, region: str, ports: Ports | None = None) -> Context:
    cfg.region(region)  # unknown region -> ConfigError naming the file
    return Context(cfg, region, ports or default_ports(cfg, region), region_dir(cfg.state_path, region))


def _states(ctx: Context, s3: Any | None = None) -> tuple[DesiredState, ActualState, Published]:
    from tritonops.release.view import region_release

    published = read_published(ctx.cfg.region(ctx.region), ctx.region, s3, ctx.dir / "published-cache")
    rel = region_release(ctx.cfg, ctx.region, published.manifests, published.configs)
    published.problems += rel.problems
    desired = desired_state(
        ctx.cfg, ctx.region, published, ctx.ports.footprint, rel.versions, rel.digest
    )
    actual = gather_actual(
        desired,
        ctx.ports.controls,
        ctx.ports.memories,
        ctx.ports.footprint,
        published,
        ctx.quarantine.keys(),
        ctx.owned.get(),
    )
    return desired, actual, published


def make_region_plan(ctx: Context) -> Plan:
    desired, actual, _ = _states(ctx)
    return make_plan(desired, actual)


def save_plan(plan: Plan, path: Path) -> None:
    atomic_write_bytes(path, (json.dumps(plan.to_json(), indent=2) + "\n").encode())


def load_plan(path: Path) -> Plan:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"{path}: plan file not found") from None
    except ValueError as e:
        raise PlanError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise PlanError(f"{path}: expected a JSON object")
    return Plan.from_json(doc, str(path))


@dataclass
class RunReport:
    region: str
    plan: Plan
    results: list[ActionResult]
    started: float
    finished: float
    quarantined: list[dict[str, Any]]
    memory: list[dict[str, Any]]
    drift: int

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.result != "ok")

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "region": self.region,
            "time": utc_now(),
            "plan_digest": self.plan.digest,
            "started": round(self.started, 3),
            "finished": round(self.finished, 3),
            "duration_s": round(self.finished - self.started, 3),
            "summary": self.plan.summary(),
            "results": [r.to_json() for r in self.results],
            "failed": self.failed,
            "notes": [n.data for n in self.plan.notes],
            "skipped_servers": sorted({n.server for n in self.plan.notes if n.kind == "server-skipped"}),
            "quarantined": self.quarantined,
            "memory": self.memory,
            "drift": self.drift,
        }


def _memory(ports: Ports) -> list[dict[str, Any]]:
    out = []
    for name, mem in sorted(ports.memories.items()):
        if mem is None:
            continue
        try:
            devs = mem.devices()
        except Exception:  # noqa: BLE001 - metrics are best effort; the run already reported the server
            continue
        out += [
            {"server": name, "device": d.device, "used_bytes": d.used_bytes, "free_bytes": d.free_bytes}
            for d in devs
        ]
    return out


def _execute(
    ctx: Context, plan: Plan, desired: DesiredState, started: float, metrics_file: Path | None
) -> RunReport:
    results = apply_plan(plan, desired, ctx.ports.controls, ctx.quarantine, ctx.owned)
    drift = sum(1 for r in results if r.result != "ok") + sum(
        1
        for n in plan.notes
        if n.kind in ("unfit", "deferred", "quarantined", "server-skipped", "over-budget")
    )
    report = RunReport(
        ctx.region, plan, results, started, time.time(), ctx.quarantine.active(), _memory(ctx.ports), drift
    )
    doc = report.to_json()
    ctx.journal.append(doc)
    metrics.write_textfile(metrics_file or ctx.dir / "tritonops_reconcile.prom", doc)
    return report


def apply_plan_file(
    ctx: Context, plan: Plan, force: bool = False, metrics_file: Path | None = None
) -> RunReport:
    """Apply exactly ``plan``; refuse it if the actual state changed since it was made."""
    if plan.region != ctx.region:
        raise PlanError(f"plan is for region {plan.region!r}, not {ctx.region!r}")
    plan.raise_if_unsafe(force)
    with region_lock(ctx.dir / "reconcile.lock", ctx.region):
        started = time.time()
        desired, actual, _ = _states(ctx)
        if actual.fingerprint(desired) != plan.fingerprint:
            raise PlanError(
                f"region {ctx.region!r}: plan {plan.digest[:12]} is stale (servers or published models "
                "changed "
                "since it was made); run `tritonops plan` again"
            )
        return _execute(ctx, plan, desired, started, metrics_file)


def reconcile(ctx: Context, force: bool = False, metrics_file: Path | None = None) -> RunReport:
    """Plan and apply once, under the region's lock (LockHeldError, exit 3, if another run holds it)."""
    with region_lock(ctx.dir / "reconcile.lock", ctx.region):
        started = time.time()
        desired, actual, _ = _states(ctx)
        plan = make_plan(desired, actual)
        plan.raise_if_unsafe(force)
        return _execute(ctx, plan, desired, started, metrics_file)


def ports_for(
    controls: Mapping[str, ServerControl],
    memories: Mapping[str, MemoryPort | None] | None = None,
    footprint: FootprintPort | None = None,
) -> Ports:
    return Ports(dict(controls), dict(memories or {}), footprint or SizeGuess())
