"""The region's placement as the plan uses it: inputs from desired and actual state, each server's
loads and evictions from the outcome, and the notes for replicas that wait.

Runs between the per-server steps of :mod:`tritonops.reconcile.plan`: after every reachable server
has unloaded what it must not hold, evicted what put it over budget and placed its pinned models,
the on-demand models of the whole region are placed in one call to
:func:`tritonops.placement.place_region`; each server then carries out its share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from tritonops.config import Placement
from tritonops.placement import ModelInput, ModelPlacement, RegionPlacement, ReplicaDecision, ServerInput, place_region
from tritonops.reconcile.state import DesiredModel, DesiredState, LoadedModel


class ServerSide(Protocol):
    """What this module needs of a server's planner (``plan.ServerSide``), without importing it."""

    name: str
    wanted: set[str]
    loaded: dict[str, LoadedModel]

    def is_quarantined(self, m: str) -> bool: ...
    def placement(self, m: str) -> Placement: ...
    def room(self) -> int: ...
    def model(self, m: str) -> DesiredModel: ...
    def evict(self, lm: LoadedModel, reason: str, figures: tuple[tuple[str, Any], ...] = ()) -> None: ...
    def reload_if_needed(self, m: str) -> None: ...
    def load_if_room(self, m: str, reason: str, figures: tuple[tuple[str, Any], ...] = ()) -> None: ...


FIGURE_KEYS = ("demand", "footprint_bytes", "footprint_source", "load_s", "load_source", "priority")


def _allowed(sp: ServerSide, m: str) -> bool:
    """May ``sp``'s server hold ``m`` in this placement? A pinned model stays where the pinned step put it."""
    if m not in sp.wanted or sp.is_quarantined(m):
        return False
    return sp.placement(m) is Placement.on_demand or m in sp.loaded


def region_placement(desired: DesiredState, planners: Mapping[str, ServerSide]) -> RegionPlacement:
    """Place the region's models over its reachable servers (``planners``, after their pinned step)."""
    dem = desired.demand
    assert dem is not None
    servers = []
    allowed: dict[str, set[str]] = {}
    for name, sp in sorted(planners.items()):
        ok = {m for m in sp.wanted if _allowed(sp, m)}
        allowed[name] = ok
        held = sum(sp.loaded[m].footprint_bytes for m in ok if m in sp.loaded)
        servers.append(ServerInput(name, sp.room() + held, frozenset(ok)))
    models = []
    for m, dm in sorted(desired.models.items()):
        where = [n for n in planners if m in allowed[n]]
        if not where:
            continue
        size_on = {}
        for n in where:
            lm = planners[n].loaded.get(m)
            size_on[n] = lm.footprint_bytes if lm is not None else planners[n].model(m).footprint_bytes
        served, source = dem.served.get(m, (None, ""))
        lo, hi = dem.replicas.get(m, (0, None))
        models.append(ModelInput(
            m, dm.footprint_bytes, dm.load_s, dem.counts.get(m, 0.0), dm.placement is Placement.pinned,
            frozenset(n for n in where if m in planners[n].loaded), served, source, lo, hi, dm.version,
            size_on, {n: planners[n].model(m).version for n in where}, dm.footprint_source, "estimate",
        ))  # fmt: skip
    return place_region(servers, models, dem.policy, evict=dem.complete)


def figures(mp: ModelPlacement) -> tuple[tuple[str, Any], ...]:
    d = mp.data
    return tuple((k, d[k]) for k in FIGURE_KEYS)


def follow(sp: ServerSide, rp: RegionPlacement) -> None:
    """This server's share of the region's placement: evictions (lowest priority first), then
    reloads of kept models at another version, then loads (highest priority first)."""
    order = sorted(rp.models.values(), key=lambda mp: (-mp.priority, mp.model))
    for mp in reversed(order):
        for e in mp.evicted:
            if e.server == sp.name and mp.model in sp.loaded:
                sp.evict(sp.loaded[mp.model], e.reason, figures(mp))
    for mp in order:
        if mp.pinned:
            continue
        r = next((r for r in mp.replicas if r.server == sp.name), None)
        if r is None:
            continue
        if r.decision in (ReplicaDecision.keep, ReplicaDecision.surplus):
            sp.reload_if_needed(mp.model)
        elif r.decision is ReplicaDecision.load:
            sp.load_if_room(mp.model, r.reason, figures(mp))


def notes(rp: RegionPlacement, desired: DesiredState, note: Callable[[str, str, str, str], Any]) -> list[Any]:
    """One note per model with a replica wanted and not placed: ``deferred`` (the cap on loads:
    counted as drift) or ``waiting`` (demand does not justify the memory, or no server may hold it)."""
    dem = desired.demand
    tail = "" if dem is None or dem.complete else " (demand incomplete: no demand-driven evictions this run)"
    out = []
    for m, mp in rp.models.items():
        if mp.pinned:
            continue
        for x in mp.missing:
            kind = "deferred" if x.why == "cap" else "waiting"
            out.append(note(kind, "", m, f"model {m!r} replica {x.replica} not placed in region "
                                         f"{desired.region!r}: {x.reason}{tail}"))  # fmt: skip
        if not mp.replicas and not mp.missing:
            out.append(note("waiting", "", m, f"model {m!r} not placed in region {desired.region!r}: "
                                              f"no demand in the window: not loaded{tail}"))  # fmt: skip
    return out
