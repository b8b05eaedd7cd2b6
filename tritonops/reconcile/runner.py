"""Wiring: config -> ports -> desired/actual -> plan -> apply, with lock, journal and metrics.

Public entry points (what the CLI calls): ``make_region_plan``, ``apply_plan_file``, ``reconcile``,
``reconcile_loop``. Demand (the region's ``demand:`` section) is read once per run, before planning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tritonops.config import Config, RegionConfig
from tritonops.demand.read import read_demand
from tritonops.demand.sources import StatsClient
from tritonops.errors import ExitCode, PlanError, StalePlanError, TritonOpsError
from tritonops.fileio import atomic_write_bytes, utc_now
from tritonops.placement import PlacementPolicy
from tritonops.reconcile import metrics
from tritonops.reconcile.apply import ActionResult, Outcome, apply_plan
from tritonops.reconcile.bucket_check import BUCKET_SERVER
from tritonops.reconcile.lock import region_lock
from tritonops.reconcile.plan import Plan, make_plan
from tritonops.reconcile.ports import FootprintPort, MemoryPort, ServerControl, SizeGuess
from tritonops.reconcile.records import Journal, Owned, Quarantine, region_dir
from tritonops.reconcile.state import (
    ActualState,
    DemandInput,
    DesiredState,
    Published,
    desired_state,
    gather_actual,
    read_published,
)

if TYPE_CHECKING:
    from tritonops.memory.ledger import FootprintLedger
    from tritonops.store.lease import Lease

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
# A run that skipped a server (down, frozen, unreachable) or had an action fail: cron must see it
# (errors.ExitCode lists every exit code).
EXIT_DEGRADED = ExitCode.DEGRADED


@dataclass
class Ports:
    controls: dict[str, ServerControl]
    memories: dict[str, MemoryPort | None]
    footprint: FootprintPort
    stats: list[StatsClient] = field(default_factory=list)  # Triton statistics, for the demand source


def default_ports(cfg: Config, region: str) -> Ports:
    """The control stage's ControlClient, the best memory probe per server (NVML, metrics, host) and the
    footprint ledger in the state dir (measured footprints; its estimate for models never loaded)."""
    from tritonops.memory.ledger import FootprintLedger
    from tritonops.reconcile.adapters import ControlAdapter, LedgerFootprint, ProbeMemory, probe_or_none

    rcfg = cfg.region(region)
    ledger = FootprintLedger.in_state_dir(cfg.state_path)
    _share_footprints(rcfg, region, ledger)
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
    stats: list[StatsClient] = [c for c in controls.values() if isinstance(c, ControlAdapter)]
    return Ports(controls, memories, footprint or SizeGuess(), stats)


def _share_footprints(rcfg: RegionConfig, region: str, ledger: FootprintLedger) -> None:
    """Footprints are measured once per fleet: import what the region's other reconcilers measured,
    and share this host's measurements through the region's bucket."""
    from tritonops.memory.fleet import FleetFootprints
    from tritonops.store import open_store

    try:
        store = open_store(rcfg, region, max_workers=4)
    except TritonOpsError as e:
        log.warning("region %s: footprints of the fleet not shared (%s)", region, e)
        return
    n = FleetFootprints(store).attach(ledger)
    if n:
        log.info("region %s: %d footprint measurements imported from %s", region, n, store.url)


@dataclass
class Context:
    cfg: Config
    region: str
    ports: Ports
    dir: Path
    interval_s: float = 60.0  # how often reconcile runs (cron's minute, or the loop's --every): placement's cost
    # The region's routes (tritonops.route, attached by the CLI): replicas leave them before an unload,
    # and every apply ends with them rendered from what the servers serve. None: not routed.
    routes: RoutesPort | None = None
    quarantine: Quarantine = field(init=False)
    owned: Owned = field(init=False)
    journal: Journal = field(init=False)
    lease: Lease | None = field(init=False, default=None)  # the region's lease while a run holds it

    def __post_init__(self) -> None:
        self.quarantine = Quarantine(self.dir / "quarantine.json")
        self.owned = Owned(self.dir / "owned.json")
        self.journal = Journal(self.dir / "journal.jsonl")


def context(cfg: Config, region: str) -> Context:
    cfg.region(region)  # unknown region -> ConfigError naming the file
    return Context(cfg, region, default_ports(cfg, region), region_dir(cfg.state_path, region))


@contextlib.contextmanager
def region_guard(ctx: Context) -> Iterator[None]:
    """One controller per region: this host's lock file (LockHeldError, exit 3), then the region's
    lease in its bucket (LeaseHeldError, exit 3, naming the holder on another host; docs/multi-host.md)."""
    from tritonops.store.lease import REGION_LEASE, hold

    with region_lock(ctx.dir / "reconcile.lock", ctx.region), \
            hold(ctx.cfg, ctx.region, REGION_LEASE, f"reconcile {ctx.region}") as lease:  # fmt: skip
        ctx.lease = lease
        try:
            yield
        finally:
            ctx.lease = None


def _check_lease(ctx: Context) -> None:
    """Act only while the lease is ours: one that expired before a renewal landed may be taken."""
    if ctx.lease is not None and ctx.lease.lost.is_set():
        from tritonops.store.lease import LeaseLostError

        raise LeaseLostError(f"region {ctx.region!r}: lease {ctx.lease.where} was lost; nothing applied")


def read_region_demand(ctx: Context, persist: bool = True) -> DemandInput | None:
    """The region's demand for this run (None without a ``demand:`` section); sources that fail fall
    back to their last counts; with none known the demand is incomplete: no demand-driven evictions."""
    settings = ctx.cfg.region(ctx.region).demand
    if settings is None:
        return None
    base = ctx.cfg.source.parent if ctx.cfg.source else None
    d = read_demand(settings, ctx.region, ctx.cfg.state_path, clients=ctx.ports.stats, base_dir=base, persist=persist)
    if not d.complete:
        log.warning("region %s: demand incomplete (%s): no demand-driven evictions this run", ctx.region,
                    "; ".join(d.errors))  # fmt: skip
    policy = PlacementPolicy(ctx.interval_s, settings.hysteresis, settings.max_loads_per_run)
    report = {k: v for k, v in d.data.items() if k != "counts"} | {"interval_s": ctx.interval_s}
    report["models_with_demand"] = sum(1 for v in d.counts.values() if v > 0)
    served, replicas = _replica_inputs(ctx, settings.window_s)
    return DemandInput(dict(d.counts), d.complete, policy, report, served, replicas)


def _replica_inputs(
    ctx: Context, window_s: float
) -> tuple[dict[str, tuple[float, str]], dict[str, tuple[int, int | None]]]:
    """What one replica serves per demand window (``models.<m>.served_rps``, else measured from the
    servers' statistics) and each model's ``replicas`` rule: the region placement's replica inputs."""
    from tritonops.placement import served_per_s

    def rows(c: StatsClient) -> list[dict[str, Any]]:
        try:
            return c.statistics()
        except TritonOpsError as e:  # a server down: measured from the others, or not at all
            log.debug("server %s: statistics not read: %s", c.name, e)
            return []

    clients = list(ctx.ports.stats)
    with ThreadPoolExecutor(max(1, min(16, len(clients))), thread_name_prefix="served") as pool:
        measured = served_per_s(r for rs in pool.map(rows, clients) for r in rs)
    served = {m: (rps * window_s, "measured") for m, rps in measured.items()}
    replicas: dict[str, tuple[int, int | None]] = {}
    for m, rule in ctx.cfg.models.items():
        if rule.served_rps is not None:
            served[m] = (rule.served_rps * window_s, "config")
        if rule.replicas is not None:
            replicas[m] = (rule.replicas.min, rule.replicas.max)
    return served, replicas


def _states(ctx: Context, demand: DemandInput | None = None) -> tuple[DesiredState, ActualState, Published]:
    from tritonops.release.view import region_release

    published = read_published(ctx.cfg.region(ctx.region), ctx.region, ctx.dir / "published-cache")
    rel = region_release(ctx.cfg, ctx.region, published.manifests, published.configs)
    published.problems += rel.problems
    quarantined = ctx.quarantine.keys()
    desired = desired_state(ctx.cfg, ctx.region, published, ctx.ports.footprint, rel.versions, rel.digest)
    desired.demand = demand
    actual = gather_actual(
        desired,
        ctx.ports.controls,
        ctx.ports.memories,
        ctx.ports.footprint,
        published,
        # The bucket gate's entries are not about a server: the gate holds those models itself.
        {k for k in quarantined if k[0] != BUCKET_SERVER},
        ctx.owned.get(),
    )
    return desired, actual, published


def _gate_loads(
    ctx: Context,
    desired: DesiredState,
    published: Published,
    loads: dict[str, int],
    full: bool,
    record: bool = True,
) -> list[str]:
    """Check the versions about to be loaded against their manifests; hold the refused ones.
    ``record``: keep the outcome in the quarantine (a run does; ``plan`` only looks)."""
    from tritonops.reconcile import bucket_check

    refused = bucket_check.check_loads(
        ctx.cfg.region(ctx.region), ctx.region, loads, published, ctx.dir / "verified.json", full
    )
    quarantine = ctx.quarantine if record else None
    bucket_check.clear_passed(desired, loads, refused, quarantine)
    return bucket_check.refuse(desired, refused, quarantine)


def _checked_plan(
    ctx: Context, demand: DemandInput | None, full: bool = False, record: bool = True
) -> tuple[DesiredState, Plan, list[str]]:
    """The plan, after the bucket gate: a version whose objects differ from the manifest is not loaded."""
    from tritonops.reconcile.bucket_check import planned_loads

    desired, actual, published = _states(ctx, demand)
    plan = make_plan(desired, actual)
    checked: dict[str, int] = {}
    refused: list[str] = []
    while True:
        # Holding a refused model can free room for another load: check until nothing new is planned.
        loads = {m: v for m, v in planned_loads(plan).items() if checked.get(m) != v}
        if not loads:
            return desired, plan, refused
        checked.update(loads)
        more = _gate_loads(ctx, desired, published, loads, full, record)
        if not more:
            return desired, plan, refused
        refused += more
        plan = make_plan(desired, actual)  # the refused models are held now


def make_region_plan(ctx: Context, verify_content: bool = False) -> Plan:
    """A dry plan: demand is read but not remembered (the Triton source's counters stay as they were),
    and the bucket gate only looks (nothing is quarantined)."""
    return _checked_plan(ctx, read_region_demand(ctx, persist=False), verify_content, record=False)[1]


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
    refused: list[str] = field(default_factory=list)  # versions not loaded: bucket differs from manifest
    route_error: str = ""  # the routes could not be updated after the apply (Envoy rejected them, ...)

    @property
    def failed(self) -> int:
        # A load deferred because measurements replaced estimates is drift, like the plan's own deferrals.
        return sum(1 for r in self.results if r.result not in (Outcome.ok, Outcome.deferred))

    @property
    def skipped_servers(self) -> dict[str, str]:
        """Servers the run could not read or act on (down, frozen, unreachable) -> why."""
        return {n.server: n.message for n in sorted(self.plan.notes, key=lambda n: n.server)
                if n.kind == "server-skipped"}  # fmt: skip

    def degraded_reasons(self) -> list[str]:
        """One line per skipped server and per action that did not succeed; empty for a clean run."""
        out = [f"server {s}: skipped ({why})" for s, why in self.skipped_servers.items()]
        if self.route_error:
            out.append(f"routes: {self.route_error}")
        for r in self.results:
            if r.result not in (Outcome.ok, Outcome.deferred):
                a = r.action
                out.append(f"server {a.server}: {a.kind} {a.model} v{a.version} {r.result}: {r.error}")
        return out

    def warnings(self) -> list[str]:
        """One line per load that serves but whose footprint could not be measured (not a failure)."""
        return [
            f"server {r.action.server}: model {r.action.model} v{r.action.version} serves, but its footprint "
            f"could not be measured ({r.measure_error}); held at its estimate, {r.estimate_bytes} bytes"
            for r in self.results
            if r.estimate_bytes is not None
        ]

    @property
    def degraded(self) -> bool:
        return bool(self.degraded_reasons())

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
            "skipped_servers": sorted(self.skipped_servers),
            "degraded": self.degraded,
            "degraded_reasons": self.degraded_reasons(),
            "warnings": self.warnings(),
            "exit_code": int(ExitCode.ERROR if self.refused else EXIT_DEGRADED if self.degraded else ExitCode.OK),
            "quarantined": self.quarantined,
            "memory": self.memory,
            "drift": self.drift,
            "demand": self.plan.demand,  # window, completeness and the sources read (None: not configured)
            "refused": self.refused,
        }


class RoutesPort(Protocol):
    """The region's routes (``tritonops.route.update.ReconcileRoutes``)."""

    def before_unload(self, leaving: list[tuple[str, str]]) -> None: ...

    def after_apply(self) -> None: ...


def _update_routes(ctx: Context) -> str:
    if ctx.routes is None:
        return ""
    try:
        ctx.routes.after_apply()
    except TritonOpsError as e:
        log.error("region %s: routes not updated: %s", ctx.region, e)
        return str(e)
    return ""


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
    ctx: Context,
    plan: Plan,
    desired: DesiredState,
    started: float,
    metrics_file: Path | None,
    refused: list[str] | None = None,
) -> RunReport:
    _check_lease(ctx)
    before_unload = ctx.routes.before_unload if ctx.routes is not None else None
    results = apply_plan(plan, desired, ctx.ports.controls, ctx.quarantine, ctx.owned, before_unload)
    route_error = _update_routes(ctx)
    drift = sum(1 for r in results if r.result is not Outcome.ok) + sum(
        1
        for n in plan.notes
        if n.kind in ("unfit", "deferred", "quarantined", "server-skipped", "over-budget")
    ) + len(refused or [])
    report = RunReport(
        ctx.region, plan, results, started, time.time(), ctx.quarantine.active(), _memory(ctx.ports), drift,
        list(refused or []), route_error,
    )
    doc = report.to_json()
    ctx.journal.append(doc)
    metrics.write_textfile(metrics_file or ctx.dir / "tritonops_reconcile.prom", doc)
    return report


def apply_plan_file(
    ctx: Context,
    plan: Plan,
    force: bool = False,
    metrics_file: Path | None = None,
    verify_content: bool = False,
) -> RunReport:
    """Apply exactly ``plan``; refuse it if the actual state changed since it was made."""
    if plan.region != ctx.region:
        raise PlanError(f"plan is for region {plan.region!r}, not {ctx.region!r}")
    plan.raise_if_unsafe(force)
    with region_guard(ctx):
        started = time.time()
        desired, actual, published = _states(ctx)
        if actual.fingerprint(desired) != plan.fingerprint:
            raise StalePlanError(
                f"region {ctx.region!r}: plan {plan.digest[:12]} is stale (servers or published models "
                "changed "
                "since it was made); run `tritonops plan` again"
            )
        # The bucket may have changed since the plan was made: check again what it loads.
        from tritonops.reconcile.bucket_check import planned_loads

        refused = _gate_loads(ctx, desired, published, planned_loads(plan), verify_content)
        return _execute(ctx, plan, desired, started, metrics_file, refused)


def reconcile(
    ctx: Context, force: bool = False, metrics_file: Path | None = None, verify_content: bool = False
) -> RunReport:
    """Plan and apply once, under the region's lock (LockHeldError, exit 3, if another run holds it).

    Versions about to be loaded are first checked against their manifests in the bucket (size, the
    sha256 recorded at upload, no extra objects; ``verify_content`` also hashes the bytes)."""
    with region_guard(ctx):
        return _run_once(ctx, force, metrics_file, verify_content)


def _run_once(ctx: Context, force: bool, metrics_file: Path | None, verify_content: bool = False) -> RunReport:
    started = time.time()
    desired, plan, refused = _checked_plan(ctx, read_region_demand(ctx), verify_content)
    plan.raise_if_unsafe(force)
    return _execute(ctx, plan, desired, started, metrics_file, refused)


def reconcile_loop(
    ctx: Context,
    every_s: float,
    stop: threading.Event,
    force: bool = False,
    metrics_file: Path | None = None,
    on_run: Callable[[RunReport | None, str], None] | None = None,
) -> int:
    """Plan and apply every ``every_s`` seconds in one process, holding the region's lock throughout
    (a cron run meanwhile exits 3), until ``stop`` is set (the CLI sets it on SIGTERM/SIGINT; a run
    in progress finishes first). A run that fails is logged and the loop goes on. Returns the runs made.

    ``on_run(report, error)`` is called after each run (report None when the run failed before applying).
    """
    ctx.interval_s = every_s
    runs = 0
    with region_guard(ctx):
        while not stop.is_set() and not (ctx.lease is not None and ctx.lease.lost.is_set()):
            t0 = time.monotonic()
            report: RunReport | None = None
            error = ""
            try:
                report = _run_once(ctx, force, metrics_file)
                log.info("region %s: run %d: %s, %d failed, drift %d, %.2f s", ctx.region, runs + 1,
                         report.plan.summary(), report.failed, report.drift,
                         report.finished - report.started)  # fmt: skip
            except TritonOpsError as e:
                error = str(e)
                log.error("region %s: run %d failed: %s", ctx.region, runs + 1, e)
            runs += 1
            if on_run is not None:
                on_run(report, error)
            stop.wait(max(0.0, every_s - (time.monotonic() - t0)))
    return runs

