"""``tritonops capacity``: sweep fleet sizes, compare with LRU/LFU/Belady, recommend the smallest fleet.

Footprints and load times per model, in this order: the footprint ledger's prediction for the model
when it is a measurement (``measured``: the latest one for the device type and Triton version given,
any when not given); ``footprint_bytes`` given by the caller (``given``); a first guess from the
on-disk size (``estimate``, see :func:`tritonops.memory.estimate.estimate_bytes`). The ledger does
not record load durations yet, so load times are ``given`` or estimated from the footprint
(:func:`tritonops.memory.estimate.estimate_load_s`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tritonops.capacity import baselines
from tritonops.capacity.simulate import PLACEMENT, Fleet, Models, Replay, replay
from tritonops.capacity.trace import Trace
from tritonops.errors import TritonOpsError
from tritonops.memory.estimate import estimate_bytes, estimate_load_s
from tritonops.memory.ledger import FootprintKey, FootprintLedger
from tritonops.placement import PlacementPolicy


class CapacityError(TritonOpsError):
    """The capacity planner's inputs do not make sense (no fleet size, a model larger than a server)."""


def model_costs(
    trace: Trace,
    *,
    ledger: FootprintLedger | None = None,
    footprint_bytes: int | None = None,
    size_bytes: int | None = None,
    load_s: float | None = None,
    device_type: str | None = None,
    triton_version: str | None = None,
) -> Models:
    """Each model's footprint and load time. ``device_type`` / ``triton_version``: the fleet's, for the
    ledger's prediction (None: a measurement on any)."""
    fp, fsrc = [], []
    for m in trace.models:
        p = ledger.predict(FootprintKey(m, None, None, device_type, triton_version)) if ledger is not None else None
        if p is not None and p.source == "measured":
            fp.append(p.bytes)
            fsrc.append("measured")
        elif footprint_bytes is not None:
            fp.append(int(footprint_bytes))
            fsrc.append("given")
        elif size_bytes is not None:
            fp.append(estimate_bytes(size_bytes))
            fsrc.append("estimate")
        else:
            raise CapacityError(
                f"model {m!r}: no footprint in the ledger; give --footprint or --model-size for models never measured"
            )
    fpa = np.asarray(fp, np.int64)
    if load_s is not None:
        ld, lsrc = np.full(len(fp), float(load_s)), ("given",) * len(fp)
    else:
        ld, lsrc = np.asarray([estimate_load_s(f) for f in fp], float), ("estimate",) * len(fp)
    return Models(fpa, ld.astype(float), tuple(fsrc), tuple(lsrc))


def default_fleet_sizes(models: Models, memory_bytes: int, points: int = 8) -> list[int]:
    """From one server to enough for every model at once, roughly geometric."""
    all_in = max(1, math.ceil(int(models.footprint_bytes.sum()) / memory_bytes))
    sizes = {1, all_in} | {max(1, round(all_in ** (i / (points - 1)))) for i in range(points)}
    return sorted(sizes)


@dataclass(frozen=True)
class SizeResult:
    replay: Replay
    baselines: dict[str, float]  # hit ratio per baseline cache, same servers and memory

    @property
    def data(self) -> dict[str, Any]:
        d = self.replay.data
        d["baselines"] = {k: round(v, 6) for k, v in self.baselines.items()}
        b = self.baselines.get("belady")
        d["share_of_belady"] = round(self.replay.warm_share / b, 6) if b else None
        return d


def plan_capacity(
    trace: Trace,
    models: Models,
    fleet_sizes: Sequence[int],
    memory_bytes: int,
    price_per_hour: float,
    policy: PlacementPolicy,
    *,
    target: float = 0.99,
    window_s: float = 3600.0,
    compare: Sequence[str] = baselines.BASELINES,
) -> dict[str, Any]:
    """Replay ``trace`` for each fleet size; the smallest one whose warm share meets ``target``."""
    if not fleet_sizes or min(fleet_sizes) < 1:
        raise CapacityError("fleet sizes: need at least one size, each >= 1")
    too_big = [m for m, b in zip(trace.models, models.footprint_bytes.tolist(), strict=True) if b > memory_bytes]
    if too_big:
        raise CapacityError(f"model {too_big[0]!r}: footprint larger than a server's memory ({memory_bytes} bytes)")
    t0 = time.monotonic()
    rows: list[SizeResult] = []
    timings: dict[str, float] = {"replay_s": 0.0, "baselines_s": 0.0}
    for n in sorted(set(fleet_sizes)):
        t = time.monotonic()
        r = replay(trace, models, Fleet(n, memory_bytes, price_per_hour), policy, window_s=window_s)
        timings["replay_s"] += time.monotonic() - t
        t = time.monotonic()
        # The region is one pool (placement spreads models over every server): so are the baselines' caches.
        b = {k: baselines.hit_ratio(k, trace.model_idx, models.footprint_bytes, memory_bytes * n) for k in compare}
        timings["baselines_s"] += time.monotonic() - t
        rows.append(SizeResult(r, b))
    ok = [s for s in rows if s.replay.warm_share >= target]
    best = min(ok, key=lambda s: s.replay.servers) if ok else None
    return {
        "trace": {"source": trace.source, "requests": trace.requests, "models": len(trace.models),
                  "span_s": round(trace.span_s, 3)},
        "fleet": {"memory_bytes": memory_bytes, "price_per_hour": price_per_hour},
        "models": {"footprint_bytes_total": int(models.footprint_bytes.sum()),
                   "footprint_sources": _count(models.footprint_source), "load_sources": _count(models.load_source),
                   "load_s_median": round(float(np.median(models.load_s)), 3)},
        "policy": {"interval_s": policy.interval_s, "hysteresis": policy.hysteresis,
                   "max_loads": policy.max_loads, "window_s": window_s},
        "target": target,
        "placement": PLACEMENT,
        "baselines": "request-level caches on the fleet's pooled memory (servers x memory), loading instantly",
        "sizes": [s.data for s in rows],
        "recommended": best.data if best else None,
        "all_models_servers": math.ceil(int(models.footprint_bytes.sum()) / memory_bytes),
        "seconds": {**{k: round(v, 3) for k, v in timings.items()}, "total_s": round(time.monotonic() - t0, 3)},
    }  # fmt: skip


def _count(xs: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items()))
