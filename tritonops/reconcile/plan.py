"""The plan: a value computed from desired and actual state, sorted, checksummed, guarded.

Same inputs give the same plan (and digest). ``.data`` is plain dicts; ``to_json`` adds
``format_version``. Memory policy, per server:

1. unload owned models no longer desired (unpublished, not allowed, not in the server's list);
2. if the server is over its budget, evict on-demand models least-recently-used first;
3. pinned models first, then on-demand ones: load what is missing, reload what is at another
   version. A reload with room for both copies loads the new one beside the old
   (availability-preserving), otherwise replaces it (resource-preserving). Only pinned models
   may evict on-demand ones (LRU first), so on-demand models never evict each other back and forth;
   a model that does not fit even after evicting every on-demand model is reported, not forced in.

Pinned models are never evicted. Models tritonops does not own are never touched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tritonops.config import Placement
from tritonops.errors import PlanError
from tritonops.reconcile.state import ActualState, DesiredState, LoadedModel

FORMAT_VERSION = 1
KINDS = ("unload", "evict", "reload", "load")
_PHASE = {"unload": 0, "evict": 0, "reload": 1, "load": 2}
AVAILABILITY = "availability-preserving"
RESOURCE = "resource-preserving"
# raise_if_unsafe: removing more than this fraction of a server's loaded models needs --force
# (once it has at least MIN_EXISTING), and removing all of them always does.
MAX_REMOVE_FRACTION = 0.5
MIN_EXISTING = 4


@dataclass(frozen=True)
class Action:
    kind: str
    server: str
    model: str
    version: int | None
    reason: str
    from_versions: tuple[int, ...] = ()
    strategy: str = ""
    digest: str = ""
    placement: str = ""
    predicted_bytes: int = 0
    memory_free_after: tuple[tuple[str, int], ...] = ()
    seq: int = 0  # planning order within the server: the order memory was simulated in

    @property
    def data(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "server": self.server,
            "model": self.model,
            "version": self.version,
            "from_versions": list(self.from_versions),
            "reason": self.reason,
            "strategy": self.strategy,
            "digest": self.digest,
            "placement": self.placement,
            "predicted_bytes": self.predicted_bytes,
            "memory_free_after": dict(self.memory_free_after),
            "seq": self.seq,
        }

    @classmethod
    def from_data(cls, d: dict[str, Any]) -> Action:
        return cls(
            str(d["kind"]),
            str(d["server"]),
            str(d["model"]),
            None if d["version"] is None else int(d["version"]),
            str(d["reason"]),
            tuple(int(v) for v in d.get("from_versions", [])),
            str(d.get("strategy", "")),
            str(d.get("digest", "")),
            str(d.get("placement", "")),
            int(d.get("predicted_bytes", 0)),
            tuple(sorted((str(k), int(v)) for k, v in d.get("memory_free_after", {}).items())),
            int(d.get("seq", 0)),
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

    def __post_init__(self) -> None:
        self.actions = sorted(self.actions, key=lambda a: (a.server, _PHASE[a.kind], a.seq, a.model))
        self.notes = sorted(set(self.notes), key=lambda n: (n.server, n.kind, n.model, n.message))

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    @property
    def data(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "fingerprint": self.fingerprint,
            "loaded_before": dict(sorted(self.loaded_before.items())),
            "actions": [a.data for a in self.actions],
            "notes": [n.data for n in self.notes],
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(
            json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()

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
                [
                    Note(str(n["kind"]), str(n["server"]), str(n["model"]), str(n["message"]))
                    for n in d["notes"]
                ],
                str(d["fingerprint"]),
                {str(k): int(v) for k, v in d.get("loaded_before", {}).items()},
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
            removed = sum(1 for a in self.actions if a.server == server and a.kind in ("unload", "evict"))
            if before and removed == before:
                raise PlanError(
                    f"region {self.region!r} server {server!r}: plan unloads all {before} models tritonops "
                    "loaded there; re-run with --force if that is intended"
                )
            if before >= MIN_EXISTING and removed / before > MAX_REMOVE_FRACTION:
                raise PlanError(
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
    actions: list[Action] = []
    notes = [Note("problem", "", "", p) for p in desired.problems]
    loaded_before: dict[str, int] = {}
    for name in sorted(desired.servers):
        sa = actual.servers.get(name)
        if sa is None or not sa.reachable:
            notes.append(Note("server-skipped", name, "", sa.error if sa else "not read"))
            continue
        loaded_before[name] = len(sa.loaded)
        a, n = _plan_server(desired, actual, name)
        actions += a
        notes += n
    return Plan(desired.region, actions, notes, actual.fingerprint(desired), loaded_before)


def _plan_server(desired: DesiredState, actual: ActualState, name: str) -> tuple[list[Action], list[Note]]:
    pol = desired.servers[name]
    sa = actual.servers[name]
    loaded: dict[str, LoadedModel] = dict(sa.loaded)
    used = sum(lm.footprint_bytes for lm in loaded.values())
    if pol.budget_bytes is not None:
        devs = [d.device for d in sa.devices] or ["budget"]
        mem = _Memory({d: pol.budget_bytes - pol.headroom_bytes - used for d in devs})
    elif sa.devices:
        mem = _Memory({d.device: d.free_bytes - pol.headroom_bytes for d in sa.devices})
    else:
        mem = _Memory(None)
    actions: list[Action] = []
    notes: list[Note] = []
    wanted = set(pol.models)

    def add(kind: str, model: str, version: int | None, reason: str, **kw: Any) -> None:
        actions.append(
            Action(
                kind, name, model, version, reason, memory_free_after=mem.snapshot(), seq=len(actions), **kw
            )
        )

    def placement(m: str) -> Placement:
        dm = desired.models.get(m)
        return dm.placement if dm else Placement.on_demand

    def evictable(exclude: str) -> list[LoadedModel]:
        c = [lm for m, lm in loaded.items() if m != exclude and placement(m) is Placement.on_demand]
        return sorted(c, key=lambda lm: (lm.last_inference_ms, lm.name))

    def evict_until(need: int, exclude: str, why: str) -> bool:
        """Evict LRU on-demand models until ``need`` fits; evict nothing if all of them are not enough."""
        cands = evictable(exclude)
        if not mem.fits(need) and mem.lowest() + sum(lm.footprint_bytes for lm in cands) < need:
            return False
        for lm in cands:
            if mem.fits(need):
                break
            del loaded[lm.name]
            mem.add(lm.footprint_bytes)
            add(
                "evict",
                lm.name,
                lm.ready_versions[-1],
                f"least recently used on-demand model; {why}",
                from_versions=tuple(lm.ready_versions),
                placement=Placement.on_demand.value,
                predicted_bytes=-lm.footprint_bytes,
            )
        return mem.fits(need)

    # 1. owned models that should not be here
    for m in sorted(loaded):
        if m in wanted:
            continue
        if m in desired.held:
            # A corrupt or half-published manifest must not take a serving model down.
            notes.append(
                Note("held", name, m, f"model {m!r} kept as loaded: its published manifest is unreadable")
            )
            continue
        lm = loaded.pop(m)
        if m not in desired.published:
            why = f"no longer published in region {desired.region!r}"
        elif m not in desired.models:
            why = f"not allowed or not loadable in region {desired.region!r}"
        else:
            why = f"not in the models list of server {name!r}"
        mem.add(lm.footprint_bytes)
        add(
            "unload",
            m,
            lm.ready_versions[-1],
            why,
            from_versions=tuple(lm.ready_versions),
            placement=placement(m).value,
            predicted_bytes=-lm.footprint_bytes,
        )

    # 2. over budget (budget lowered, or others grew): evict LRU on-demand models
    if not mem.fits(0) and not evict_until(0, "", "server is over its memory budget"):
        notes.append(
            Note(
                "over-budget",
                name,
                "",
                f"server {name!r} stays over its memory budget by "
                f"{mem.shortfall()} bytes after evicting every on-demand model",
            )
        )

    # 3. loads and reloads: pinned first, then on-demand by recent use, then name
    def priority(m: str) -> tuple[int, int, str]:
        lm = loaded.get(m)
        return (0 if placement(m) is Placement.pinned else 1, -(lm.last_inference_ms if lm else 0), m)

    for m in sorted(wanted, key=priority):
        dm = desired.model_on(name, m)  # a canary server's release version, else the region's
        assert dm is not None
        cur = loaded.get(m)
        if cur is not None and cur.ready_versions == [dm.version]:
            continue  # never call load for a model already at the desired state: Triton would reload it
        if (name, m, dm.digest) in actual.quarantined:
            notes.append(
                Note(
                    "quarantined",
                    name,
                    m,
                    f"model {m!r} version {dm.version} is quarantined on "
                    f"server {name!r}; not retried until it expires or its digest changes",
                )
            )
            continue
        pinned = dm.placement is Placement.pinned
        common = {"digest": dm.digest, "placement": dm.placement.value}
        if cur is None:
            if not mem.fits(dm.footprint_bytes) and not (
                pinned and evict_until(dm.footprint_bytes, m, f"makes room for pinned model {m!r}")
            ):
                kind = "unfit" if pinned else "deferred"
                notes.append(
                    Note(
                        kind,
                        name,
                        m,
                        f"model {m!r} version {dm.version} needs "
                        f"{dm.footprint_bytes} bytes per device; server {name!r} has "
                        f"{max(0, mem.lowest())} free"
                        + (
                            " even after evicting every on-demand model"
                            if pinned
                            else " (on-demand models wait for room)"
                        ),
                    )
                )
                continue
            mem.add(-dm.footprint_bytes)
            loaded[m] = LoadedModel(m, {dm.version: "READY"}, dm.footprint_bytes)
            add(
                "load",
                m,
                dm.version,
                "published, allowed and not loaded",
                predicted_bytes=dm.footprint_bytes,
                **common,
            )
            continue
        # reload: another version (or extra versions) loaded
        frm = tuple(cur.ready_versions)
        extra_only = dm.version in frm
        need_both = 0 if extra_only else dm.footprint_bytes
        delta = dm.footprint_bytes - cur.footprint_bytes
        if mem.fits(need_both):
            strategy = AVAILABILITY
        elif mem.fits(delta) or (pinned and evict_until(delta, m, f"makes room for pinned model {m!r}")):
            strategy = RESOURCE
        else:
            notes.append(
                Note(
                    "unfit" if pinned else "deferred",
                    name,
                    m,
                    f"model {m!r} version {dm.version} needs {dm.footprint_bytes} bytes per device; "
                    f"server {name!r} cannot fit it, version(s) {list(frm)} stay loaded",
                )
            )
            continue
        mem.add(-delta)
        loaded[m] = LoadedModel(m, {dm.version: "READY"}, dm.footprint_bytes, cur.last_inference_ms)
        why = (
            f"extra versions {[v for v in frm if v != dm.version]} loaded"
            if extra_only
            else f"version {dm.version} published (loaded: {list(frm)})"
        )
        add(
            "reload",
            m,
            dm.version,
            why,
            from_versions=frm,
            strategy=strategy,
            predicted_bytes=delta,
            **common,
        )
    return actions, notes
