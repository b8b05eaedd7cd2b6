"""The plan: a value computed from desired and actual state, sorted, checksummed, guarded.

Same inputs give the same plan (and digest). ``.data`` is plain dicts; ``to_json`` adds
``format_version``. Memory policy, per server, in three named steps (:class:`_ServerPlanner`):

1. **unload unwanted**: owned models no longer desired (unpublished, not allowed, not in the
   server's list);
2. **evict over budget**: if the server is over its budget, evict on-demand models, lowest first
   (by demand priority when the region's demand is known and complete, else least recently used);
3. **place**: pinned models first (load what is missing, reload what is at another version; a pinned
   model may evict on-demand ones, lowest first; one that does not fit even after evicting every
   on-demand model is reported, not forced in); then the on-demand models:

   - with the region's ``demand`` (a ``demand:`` section): once for the whole region, over every
     reachable server, by :func:`tritonops.placement.place_region` (``region_plan``; see
     docs/region-placement.md): every model with demand gets a replica before any gets a second,
     replicas follow demand on distinct servers; each server's evictions and loads follow, each
     with its ``figures`` (demand, footprint and its source, load time and its source, priority),
     and the plan carries the placement (``placement``) and the demand sources read (``demand``).
     With incomplete demand (a source failed and no earlier counts are known) nothing is evicted
     for demand: loaded replicas stay, free room is filled;
   - without demand: each server on its own through :func:`tritonops.placement.place`: loaded
     on-demand models stay, and the free room is filled (the smaller first, then by name).

A reload with room for both copies loads the new one beside the old (availability-preserving),
otherwise replaces it (resource-preserving). Pinned models are never evicted. Models tritonops does
not own are never touched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tritonops.config import Placement
from tritonops.errors import PlanError, UnsafePlanError
from tritonops.guard import Breach, ChangeGuard
from tritonops.placement import Candidate, Decision, PlacementPolicy, place, priority_of
from tritonops.reconcile import region_plan
from tritonops.reconcile.region_plan import FIGURE_KEYS
from tritonops.reconcile.state import ActualState, DesiredModel, DesiredState, LoadedModel

FORMAT_VERSION = 1


class ActionKind(str, Enum):
    unload = "unload"
    evict = "evict"
    reload = "reload"
    load = "load"

    def __str__(self) -> str:
        return self.value


class Strategy(str, Enum):
    """How a reload keeps serving: beside the old version (availability) or after it (resource)."""

    none = ""  # not a reload
    availability = "availability-preserving"
    resource = "resource-preserving"

    def __str__(self) -> str:
        return self.value


KINDS = tuple(ActionKind)
_PHASE = {ActionKind.unload: 0, ActionKind.evict: 0, ActionKind.reload: 1, ActionKind.load: 2}
AVAILABILITY = Strategy.availability
RESOURCE = Strategy.resource
# FIGURE_KEYS: the figures behind a demand-driven load or eviction (region_plan.figures).
# raise_if_unsafe: removing more than this fraction of a server's loaded models needs --force
# (once it has at least MIN_EXISTING), and removing all of them always does.
MAX_REMOVE_FRACTION = 0.5
MIN_EXISTING = 4
UNLOAD_GUARD = ChangeGuard(MAX_REMOVE_FRACTION, min_existing=MIN_EXISTING, refuse_all=True)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    server: str
    model: str
    version: int | None
    reason: str
    from_versions: tuple[int, ...] = ()
    strategy: Strategy = Strategy.none
    digest: str = ""
    placement: str = ""
    predicted_bytes: int = 0
    memory_free_after: tuple[tuple[str, int], ...] = ()
    seq: int = 0  # planning order within the server: the order memory was simulated in
    figures: tuple[tuple[str, Any], ...] = ()  # demand and cost behind a demand-driven load or eviction

    @property
    def data(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind.value,
            "server": self.server,
            "model": self.model,
            "version": self.version,
            "from_versions": list(self.from_versions),
            "reason": self.reason,
            "strategy": self.strategy.value,
            "digest": self.digest,
            "placement": self.placement,
            "predicted_bytes": self.predicted_bytes,
            "memory_free_after": dict(self.memory_free_after),
            "seq": self.seq,
        }
        if self.figures:  # only demand-driven actions have them: plans without demand stay as they were
            d["figures"] = dict(self.figures)
        return d

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> Action:
        return cls(
            ActionKind(d["kind"]),
            str(d["server"]),
            str(d["model"]),
            None if d["version"] is None else int(d["version"]),
            str(d["reason"]),
            tuple(int(v) for v in d.get("from_versions", [])),
            Strategy(d.get("strategy", "")),
            str(d.get("digest", "")),
            str(d.get("placement", "")),
            int(d.get("predicted_bytes", 0)),
            tuple(sorted((str(k), int(v)) for k, v in d.get("memory_free_after", {}).items())),
            int(d.get("seq", 0)),
            tuple((str(k), d["figures"][k]) for k in FIGURE_KEYS if k in d.get("figures", {})),
        )


@dataclass(frozen=True)
class Note:
    """Something the plan will not do, and why: unfit, deferred, quarantined, server skipped, problem."""

    kind: str
    server: str
    model: str
    message: str

    @property
    def data(self) -> dict[str, str]:
        return {"kind": self.kind, "server": self.server, "model": self.model, "message": self.message}


@dataclass
class Plan:
    region: str
    actions: list[Action]
    notes: list[Note] = field(default_factory=list)
    fingerprint: str = ""
    loaded_before: dict[str, int] = field(default_factory=dict)  # server -> owned models loaded
    demand: dict[str, Any] | None = None  # the demand the place step used (window, sources), if any
    placement: dict[str, Any] | None = None  # the region's placement (RegionPlacement.data), with demand

    def __post_init__(self) -> None:
        self.actions = sorted(self.actions, key=lambda a: (a.server, _PHASE[a.kind], a.seq, a.model))
        self.notes = sorted(set(self.notes), key=lambda n: (n.server, n.kind, n.model, n.message))

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    @property
    def data(self) -> dict[str, Any]:
        d = {
            "region": self.region,
            "fingerprint": self.fingerprint,
            "loaded_before": dict(sorted(self.loaded_before.items())),
            "actions": [a.data for a in self.actions],
            "notes": [n.data for n in self.notes],
        }
        if self.demand is not None:  # absent without a demand section: such plans stay as they were
            d["demand"] = self.demand
        if self.placement is not None:
            d["placement"] = self.placement
        return d

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def summary(self) -> dict[str, int]:
        return {k: sum(1 for a in self.actions if a.kind == k) for k in KINDS}

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "digest": self.digest,
            "summary": self.summary(),
            **self.data,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "<plan>") -> Plan:
        try:
            if d.get("format_version") != FORMAT_VERSION:
                raise PlanError(f"{source}: format_version: unsupported {d.get('format_version')!r}")
            plan = cls(
                str(d["region"]),
                [Action.from_data(a) for a in d["actions"]],
                [Note(str(n["kind"]), str(n["server"]), str(n["model"]), str(n["message"])) for n in d["notes"]],
                str(d["fingerprint"]),
                {str(k): int(v) for k, v in d.get("loaded_before", {}).items()},
                d.get("demand"),
                d.get("placement"),
            )
        except PlanError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PlanError(f"{source}: malformed plan ({type(e).__name__}: {e})") from None
        if plan.digest != d.get("digest"):
            raise PlanError(f"{source}: digest does not match the plan's content (edited by hand?)")
        return plan

    def raise_if_unsafe(self, force: bool = False) -> None:
        """Refuse to unload everything, or too large a share, of a server's models without ``force``."""
        if force:
            return
        for server, before in sorted(self.loaded_before.items()):
            removed = sum(
                1 for a in self.actions if a.server == server and a.kind in (ActionKind.unload, ActionKind.evict)
            )
            breach = UNLOAD_GUARD.breach(removed, before)
            if breach is Breach.ALL:
                raise UnsafePlanError(
                    f"region {self.region!r} server {server!r}: plan unloads all {before} models tritonops "
                    "loaded there; re-run with --force if that is intended"
                )
            if breach is Breach.TOO_MANY:
                raise UnsafePlanError(
                    f"region {self.region!r} server {server!r}: plan unloads {removed} of {before} models "
                    f"(more than {MAX_REMOVE_FRACTION:.0%}); re-run with --force if that is intended"
                )


class _Memory:
    """Free bytes per device as the plan is simulated; ``None`` devices means memory is unknown."""

    def __init__(self, free: dict[str, int] | None) -> None:
        self.free = free

    def fits(self, need: int) -> bool:
        return self.free is None or min(self.free.values(), default=0) >= need

    def shortfall(self) -> int:
        return 0 if self.free is None else max(0, -min(self.free.values(), default=0))

    def lowest(self) -> int:
        return 0 if self.free is None else min(self.free.values(), default=0)

    def add(self, delta: int) -> None:
        if self.free is not None:
            for d in self.free:
                self.free[d] += delta

    def snapshot(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.free.items())) if self.free is not None else ()


def make_plan(desired: DesiredState, actual: ActualState) -> Plan:
    """Each reachable server unloads, evicts over budget and places its pinned models; then the
    on-demand models are placed for the whole region at once (with demand: region_plan) or, without
    demand, each server fills its own room; each server's actions follow."""
    notes = [Note("problem", "", "", p) for p in desired.problems]
    loaded_before: dict[str, int] = {}
    planners: dict[str, _ServerPlanner] = {}
    for name in sorted(desired.servers):
        sa = actual.servers.get(name)
        if sa is None or not sa.reachable:
            notes.append(Note("server-skipped", name, "", sa.error if sa else "not read"))
            continue
        loaded_before[name] = len(sa.loaded)
        sp = planners[name] = _ServerPlanner(desired, actual, name)
        sp.unload_unwanted()
        sp.evict_over_budget()
        sp.place_pinned()
    placed = None
    if desired.demand is not None and planners:
        rp = region_plan.region_placement(desired, planners)
        placed = rp.data
        notes += region_plan.notes(rp, desired, Note)
    for sp in planners.values():
        if desired.demand is None:
            sp.place_on_demand()
        else:
            sp.note_quarantined()
            region_plan.follow(sp, rp)
    actions = [a for sp in planners.values() for a in sp.actions]
    notes += [n for sp in planners.values() for n in sp.notes]
    demand = desired.demand.report if desired.demand is not None else None
    return Plan(desired.region, actions, notes, actual.fingerprint(desired), loaded_before, demand, placed)


_NO_ROOM_LIMIT = 1 << 62  # memory unknown (no budget, no probe): everything fits


class _ServerPlanner:
    """One server's plan, step by step, simulating its memory as actions are added."""

    def __init__(self, desired: DesiredState, actual: ActualState, name: str) -> None:
        self.desired, self.actual, self.name = desired, actual, name
        self.pol = desired.servers[name]
        sa = actual.servers[name]
        self.loaded: dict[str, LoadedModel] = dict(sa.loaded)
        used = sum(lm.footprint_bytes for lm in self.loaded.values())
        if self.pol.budget_bytes is not None:
            devs = [d.device for d in sa.devices] or ["budget"]
            self.mem = _Memory({d: self.pol.budget_bytes - self.pol.headroom_bytes - used for d in devs})
        elif sa.devices:
            self.mem = _Memory({d.device: d.free_bytes - self.pol.headroom_bytes for d in sa.devices})
        else:
            self.mem = _Memory(None)
        self.actions: list[Action] = []
        self.notes: list[Note] = []
        self.wanted = set(self.pol.models)
        dem = desired.demand
        # Demand drives evictions only when every source gave counts (fresh or remembered).
        self.driven = dem is not None and dem.complete
        self.policy = dem.policy if dem is not None else PlacementPolicy(hysteresis=0.0, max_loads=None)

    # -- helpers ---------------------------------------------------------------------------------

    def add(self, kind: ActionKind, model: str, version: int | None, reason: str, **kw: Any) -> None:
        self.actions.append(
            Action(kind, self.name, model, version, reason, memory_free_after=self.mem.snapshot(),
                   seq=len(self.actions), **kw)
        )  # fmt: skip

    def model(self, m: str) -> DesiredModel:
        """What this server should serve of ``m``: its canary release version, else the region's."""
        dm = self.desired.model_on(self.name, m)
        assert dm is not None, m
        return dm

    def placement(self, m: str) -> Placement:
        dm = self.desired.models.get(m)
        return dm.placement if dm else Placement.on_demand

    def demand(self, m: str) -> float:
        return self.desired.demand.counts.get(m, 0.0) if self.desired.demand is not None else 1.0

    def candidate(self, m: str, loaded: bool) -> Candidate:
        dm = self.model(m)
        return Candidate(m, dm.footprint_bytes, dm.load_s, self.demand(m), False, loaded,
                         dm.footprint_source, "estimate")  # fmt: skip

    def loaded_figures(self, lm: LoadedModel) -> tuple[tuple[str, Any], ...]:
        dm = self.desired.models.get(lm.name)
        d = {"demand": self.demand(lm.name), "footprint_bytes": lm.footprint_bytes,
             "footprint_source": dm.footprint_source if dm else "estimate",
             "load_s": round(dm.load_s if dm else 0.0, 3), "load_source": "estimate",
             "priority": round(self.priority(lm), 6)}  # fmt: skip
        return tuple((k, d[k]) for k in FIGURE_KEYS)

    def priority(self, lm: LoadedModel) -> float:
        dm = self.desired.models.get(lm.name)
        load_s = dm.load_s if dm else 0.0
        return float(priority_of(self.demand(lm.name), lm.footprint_bytes, load_s, self.policy.interval_s))

    def evict_order(self, exclude: str) -> list[LoadedModel]:
        """On-demand models in eviction order: lowest demand priority (or least recently used) first."""
        c = [lm for m, lm in self.loaded.items() if m != exclude and self.placement(m) is Placement.on_demand]
        if self.driven:
            return sorted(c, key=lambda lm: (self.priority(lm), lm.name))
        return sorted(c, key=lambda lm: (lm.last_inference_ms, lm.name))

    def room(self) -> int:
        return _NO_ROOM_LIMIT if self.mem.free is None else self.mem.lowest()

    def evict(self, lm: LoadedModel, reason: str, figures: tuple[tuple[str, Any], ...] = ()) -> None:
        del self.loaded[lm.name]
        self.mem.add(lm.footprint_bytes)
        self.add(ActionKind.evict, lm.name, lm.ready_versions[-1], reason, from_versions=tuple(lm.ready_versions),
                 placement=Placement.on_demand.value, predicted_bytes=-lm.footprint_bytes, figures=figures)  # fmt: skip

    def evict_until(self, need: int, exclude: str, why: str) -> bool:
        """Evict on-demand models, lowest first, until ``need`` fits; nothing if all of them are not enough."""
        cands = self.evict_order(exclude)
        if not self.mem.fits(need) and self.mem.lowest() + sum(lm.footprint_bytes for lm in cands) < need:
            return False
        for lm in cands:
            if self.mem.fits(need):
                break
            if self.driven:
                self.evict(lm, f"lowest demand priority {self.priority(lm):.4g} s/GiB; {why}", self.loaded_figures(lm))
            else:
                self.evict(lm, f"least recently used on-demand model; {why}")
        return self.mem.fits(need)

    # -- 1. unload unwanted ----------------------------------------------------------------------

    def unload_unwanted(self) -> None:
        """Owned models that should not be here: unpublished, not allowed, not in the server's list."""
        d = self.desired
        for m in sorted(self.loaded):
            if m in self.wanted:
                continue
            if m in d.held:
                # A corrupt or half-published manifest must not take a serving model down.
                self.notes.append(
                    Note("held", self.name, m,
                         f"model {m!r} kept as loaded: its published version cannot be loaded now "
                         "(see problems)")  # fmt: skip
                )
                continue
            lm = self.loaded.pop(m)
            if m not in d.published:
                why = f"no longer published in region {d.region!r}"
            elif m not in d.models:
                why = f"not allowed or not loadable in region {d.region!r}"
            else:
                why = f"not in the models list of server {self.name!r}"
            self.mem.add(lm.footprint_bytes)
            self.add(ActionKind.unload, m, lm.ready_versions[-1], why, from_versions=tuple(lm.ready_versions),
                     placement=self.placement(m).value, predicted_bytes=-lm.footprint_bytes)  # fmt: skip

    # -- 2. evict over budget --------------------------------------------------------------------

    def evict_over_budget(self) -> None:
        """Budget lowered, or others grew: evict on-demand models, lowest first, until back under it."""
        if self.mem.fits(0) or self.evict_until(0, "", "server is over its memory budget"):
            return
        self.notes.append(
            Note("over-budget", self.name, "", f"server {self.name!r} stays over its memory budget by "
                 f"{self.mem.shortfall()} bytes after evicting every on-demand model")
        )  # fmt: skip

    # -- 3. place --------------------------------------------------------------------------------

    def is_quarantined(self, m: str) -> bool:
        return (self.name, m, self.model(m).digest) in self.actual.quarantined

    def note_quarantined(self) -> None:
        for m in sorted(self.wanted):
            if self.placement(m) is Placement.on_demand:
                self.quarantined(m)

    def quarantined(self, m: str) -> bool:
        dm = self.model(m)
        if not self.is_quarantined(m):
            return False
        self.notes.append(
            Note("quarantined", self.name, m, f"model {m!r} version {dm.version} is quarantined on "
                 f"server {self.name!r}; not retried until it expires or its digest changes")
        )  # fmt: skip
        return True

    def place_pinned(self) -> None:
        """Pinned models: load or reload each; evict on-demand models (lowest first) to make room."""
        pinned = [m for m in self.wanted if self.placement(m) is Placement.pinned]
        for m in sorted(pinned, key=self.recency_key):
            dm = self.model(m)
            cur = self.loaded.get(m)
            if (cur is not None and cur.ready_versions == [dm.version]) or self.quarantined(m):
                continue  # never call load for a model already at the desired state: Triton would reload it
            if cur is not None:
                self.reload(dm, cur)
                continue
            why = f"makes room for pinned model {m!r}"
            if not self.mem.fits(dm.footprint_bytes) and not self.evict_until(dm.footprint_bytes, m, why):
                self.notes.append(
                    Note("unfit", self.name, m, self.no_room(dm) + " even after evicting every on-demand model")
                )
                continue
            self.load(dm, "published, allowed and not loaded")

    def recency_key(self, m: str) -> tuple[int, str]:
        lm = self.loaded.get(m)
        return (-(lm.last_inference_ms if lm else 0), m)

    def no_room(self, dm: DesiredModel) -> str:
        return (f"model {dm.name!r} version {dm.version} needs {dm.footprint_bytes} bytes per device; "
                f"server {self.name!r} has {max(0, self.mem.lowest())} free")  # fmt: skip

    def load(self, dm: DesiredModel, reason: str, figures: tuple[tuple[str, Any], ...] = ()) -> None:
        self.mem.add(-dm.footprint_bytes)
        self.loaded[dm.name] = LoadedModel(dm.name, {dm.version: "READY"}, dm.footprint_bytes)
        self.add(ActionKind.load, dm.name, dm.version, reason, predicted_bytes=dm.footprint_bytes,
                 digest=dm.digest, placement=dm.placement.value, figures=figures)  # fmt: skip

    def reload(self, dm: DesiredModel, cur: LoadedModel) -> None:
        """Another version (or extra versions) loaded: beside the old one if both fit, else in its place."""
        m, pinned = dm.name, dm.placement is Placement.pinned
        frm = tuple(cur.ready_versions)
        extra_only = dm.version in frm
        need_both = 0 if extra_only else dm.footprint_bytes
        delta = dm.footprint_bytes - cur.footprint_bytes
        if self.mem.fits(need_both):
            strategy = Strategy.availability
        elif self.mem.fits(delta) or (pinned and self.evict_until(delta, m, f"makes room for pinned model {m!r}")):
            strategy = Strategy.resource
        else:
            self.notes.append(
                Note("unfit" if pinned else "deferred", self.name, m,
                     f"model {m!r} version {dm.version} needs {dm.footprint_bytes} bytes per device; "
                     f"server {self.name!r} cannot fit it, version(s) {list(frm)} stay loaded")
            )  # fmt: skip
            return
        self.mem.add(-delta)
        self.loaded[m] = LoadedModel(m, {dm.version: "READY"}, dm.footprint_bytes, cur.last_inference_ms)
        why = (
            f"extra versions {[v for v in frm if v != dm.version]} loaded"
            if extra_only
            else f"version {dm.version} published (loaded: {list(frm)})"
        )
        self.add(ActionKind.reload, m, dm.version, why, from_versions=frm, strategy=strategy,
                 predicted_bytes=delta, digest=dm.digest, placement=dm.placement.value)  # fmt: skip

    def place_on_demand(self) -> None:
        """Without demand (no ``demand:`` section): loaded on-demand models stay (reloaded in place) and
        the free room is filled through :func:`tritonops.placement.place` (smaller first, then by name)."""
        ods = [m for m in sorted(self.wanted) if self.placement(m) is Placement.on_demand]
        ods = [m for m in ods if not self.quarantined(m)]  # a quarantined one stays as it is
        for m in sorted((m for m in ods if m in self.loaded), key=self.recency_key):
            self.reload_if_needed(m)
        cands = [self.candidate(m, False) for m in ods if m not in self.loaded]
        result = place(cands, max(0, self.room()), self.policy)
        for p in sorted(result.decisions, key=lambda p: (-p.priority, p.model)):
            if p.decision is Decision.load:
                self.load_if_room(p.model, "published, allowed and not loaded")
            elif p.decision in (Decision.deferred, Decision.wait):
                dm = self.model(p.model)
                self.notes.append(
                    Note("deferred", self.name, p.model, self.no_room(dm) + " (on-demand models wait for room)")
                )

    def reload_if_needed(self, m: str) -> None:
        dm, cur = self.model(m), self.loaded[m]
        if cur.ready_versions != [dm.version]:
            self.reload(dm, cur)

    def load_if_room(self, m: str, reason: str, figures: tuple[tuple[str, Any], ...] = ()) -> None:
        dm = self.model(m)
        if not self.mem.fits(dm.footprint_bytes):  # a reload before it took more than placement knew
            self.notes.append(Note("deferred", self.name, m, self.no_room(dm) + " (on-demand models wait for room)"))
            return
        self.load(dm, reason, figures)
