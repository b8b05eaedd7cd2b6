"""Synthetic desired/actual state for planner tests and the benchmark (no network)."""

from __future__ import annotations

from tritonops.config import Placement
from tritonops.memory.probes import DeviceMemory
from tritonops.reconcile.state import (
    ActualState,
    DesiredModel,
    DesiredState,
    LoadedModel,
    ServerActual,
    ServerPolicy,
)

MB = 1 << 20


def desired(
    models: dict[str, tuple[int, str, int]],
    servers: dict[str, list[str] | None],
    budget: int | None = None,
    headroom: int = 0,
    region: str = "r1",
    published: set[str] | None = None,
) -> DesiredState:
    """models: name -> (version, placement, footprint)."""
    dm = {n: DesiredModel(n, v, f"d-{n}-{v}", Placement(p), fp) for n, (v, p, fp) in models.items()}
    pols = {
        s: ServerPolicy(s, sorted(ms if ms is not None else dm), budget, headroom)
        for s, ms in servers.items()
    }
    return DesiredState(region, "idx", published if published is not None else set(dm), dm, pols)


def actual(
    servers: dict[str, dict[str, tuple[list[int], int, int]]],
    free: int | None = None,
    quarantined: set[tuple[str, str, str]] | None = None,
) -> ActualState:
    """servers: name -> model -> (ready versions, footprint, last_inference_ms)."""
    out = {}
    for s, loaded in servers.items():
        lms = {m: LoadedModel(m, {v: "READY" for v in vs}, fp, li) for m, (vs, fp, li) in loaded.items()}
        devs = [DeviceMemory("gpu0", "gpu", 80_000 * MB, 80_000 * MB - free, free)] if free is not None else []
        out[s] = ServerActual(s, True, loaded=lms, devices=devs)
    return ActualState(out, quarantined or set())
