"""Apply a plan: unloads and evictions first (to free memory), then reloads and loads, one at a time.

Each load passes a health gate (the version READY in the index, then a warmup inference generated
from the config's inputs). A failed gate keeps or restores the previous version, records the
failure in the quarantine and carries on. A server that stops answering has its remaining
actions skipped and reported; the other servers proceed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tritonops.errors import TritonOpsError
from tritonops.reconcile.plan import AVAILABILITY, Action, Plan
from tritonops.reconcile.ports import ServerControl
from tritonops.reconcile.state import DesiredState
from tritonops.reconcile.store import Owned, Quarantine
from tritonops.reconcile.triton_config import config_for_versions, parse_config

log = logging.getLogger(__name__)


@dataclass
class ActionResult:
    action: Action
    result: str  # ok | failed | skipped
    duration_s: float = 0.0
    error: str = ""
    quarantined: bool = False
    restored: list[int] = field(default_factory=list)
    prediction_error_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        a = self.action
        return {
            "kind": a.kind,
            "server": a.server,
            "model": a.model,
            "version": a.version,
            "strategy": a.strategy,
            "result": self.result,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "quarantined": self.quarantined,
            "restored_versions": self.restored,
            "prediction_error_bytes": self.prediction_error_bytes,
        }


class _GateError(TritonOpsError):
    pass


def _ready_versions(ctl: ServerControl, model: str) -> list[int]:
    return sorted(
        r.version for r in ctl.index() if r.model == model and r.state == "READY" and r.version is not None
    )


def _gate(ctl: ServerControl, model: str, version: int, config: dict[str, Any]) -> None:
    rows = [r for r in ctl.index() if r.model == model and r.version == version]
    if not rows or rows[0].state != "READY":
        why = rows[0].reason if rows else "not in the repository index"
        raise _GateError(
            f"server {ctl.name!r}: model {model!r} version {version} not READY after load: {why}"
        )
    ctl.warmup(model, version, config)


def apply_plan(
    plan: Plan,
    desired: DesiredState,
    controls: Mapping[str, ServerControl],
    quarantine: Quarantine,
    owned: Owned,
) -> list[ActionResult]:
    results: list[ActionResult] = []
    down: dict[str, str] = {}
    for a in plan.actions:  # already sorted: per server, unloads/evictions, then reloads, then loads
        if a.server in down:
            results.append(ActionResult(a, "skipped", error=down[a.server]))
            continue
        ctl = controls[a.server]
        t0 = time.monotonic()
        r = ActionResult(a, "ok")
        try:
            if a.kind in ("unload", "evict"):
                ctl.unload(a.model)
                owned.update(set(), {a.model})
            else:
                _load(a, desired, ctl, r, quarantine)
                owned.update({a.model}, set())
        except TritonOpsError as e:
            r.result, r.error = "failed", str(e)
        r.duration_s = time.monotonic() - t0
        if r.result == "failed":
            log.warning("%s", r.error)
            try:
                ctl.index()
            except TritonOpsError as e:
                down[a.server] = f"server {a.server!r} stopped answering during apply: {e}"
        results.append(r)
    return results


def _load(
    a: Action, desired: DesiredState, ctl: ServerControl, r: ActionResult, quarantine: Quarantine
) -> None:
    assert a.version is not None
    dm = desired.model_on(a.server, a.model)  # a canary server's release version, else the region's
    if dm is None or dm.version != a.version:
        raise _GateError(f"model {a.model!r} version {a.version} is no longer the published version")
    config = parse_config(dm.config_text, f"{desired.region}/{a.model}/config.pbtxt")
    old = list(a.from_versions)
    if a.kind == "reload" and a.strategy != AVAILABILITY and a.version not in old:
        ctl.unload(a.model)  # resource-preserving: free the old copy before loading the new one
    meta: dict[str, Any] = {"version": a.version, "digest": dm.digest, "size_bytes": dm.size_bytes}
    try:
        if a.kind == "reload" and a.strategy == AVAILABILITY and a.version not in old:
            measured = ctl.load(a.model, config_for_versions(config, a.model, [*old, a.version]), **meta)
            _gate(ctl, a.model, a.version, config)
            # Switching to the new version alone only drops the old one: not a footprint to measure.
            ctl.load(a.model, config_for_versions(config, a.model, [a.version]), **meta, measure=False)
        else:
            measured = ctl.load(
                a.model,
                config_for_versions(config, a.model, [a.version]),
                **meta,
                measure=a.version not in old,
            )
        _gate(ctl, a.model, a.version, config)
        if measured is not None:
            r.prediction_error_bytes = measured - dm.footprint_bytes
    except TritonOpsError as e:
        r.result, r.error = "failed", str(e)
        r.quarantined = quarantine.record_failure(a.server, a.model, a.version, a.digest, str(e))
        r.restored = _restore(ctl, a.model, old, config)
        return
    quarantine.clear(a.server, a.model, a.digest)


def _restore(ctl: ServerControl, model: str, old: list[int], config: dict[str, Any]) -> list[int]:
    """Bring back exactly the versions that served before; for a first load, leave nothing half-loaded."""
    try:
        if old:
            if _ready_versions(ctl, model) != sorted(old):
                ctl.load(model, config_for_versions(config, model, old))
        elif any(r.model == model and r.state in ("READY", "UNAVAILABLE") for r in ctl.index()):
            ctl.unload(model)
        return _ready_versions(ctl, model)
    except TritonOpsError as e:
        log.warning("server %s: could not restore model %s: %s", ctl.name, model, e)
        return []
