"""Combine a region's demand sources, with a per-source fallback to the last demand read.

State: ``<state_dir>/demand/<region>.json`` holds, per source, the last counts read and when, and
the Triton counters of the last run. A source that fails is reported (``SourceStatus.error``) and
its last known counts are used instead (``fallback_from``); with none known the source adds
nothing and ``Demand.complete`` is False: the caller must then not evict on demand (keep what is
loaded) rather than read the silence as "no demand".

Sources are combined per model by the maximum: a gateway's count covers every request and
Triton's covers loaded models only, so summing would count requests twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonops.demand.settings import DemandSettings, EnvoySource, JsonSource, PrometheusSource, TritonSource
from tritonops.demand.sources import (
    DemandError,
    StatsClient,
    read_envoy,
    read_json,
    read_prometheus,
    read_triton,
)
from tritonops.fileio import atomic_write_bytes, utc_now

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SourceStatus:
    source: str
    ok: bool
    models: int
    error: str = ""
    fallback_from: str | None = None  # when the counts used were read (None: none used, or fresh)

    @property
    def data(self) -> dict[str, Any]:
        return {"source": self.source, "ok": self.ok, "models": self.models, "error": self.error,
                "fallback_from": self.fallback_from}  # fmt: skip


@dataclass(frozen=True)
class Demand:
    """Requests per model over ``window_s`` (what :class:`tritonops.placement.Candidate` takes)."""

    region: str
    window_s: float
    counts: dict[str, float]
    sources: tuple[SourceStatus, ...]
    last_inference_ms: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every source contributed fresh or remembered counts."""
        return all(s.ok or s.fallback_from for s in self.sources)

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.sources if not s.ok]

    def of(self, model: str) -> float:
        return self.counts.get(model, 0.0)

    @property
    def data(self) -> dict[str, Any]:
        return {"region": self.region, "window_s": self.window_s, "complete": self.complete,
                "counts": dict(sorted(self.counts.items())), "sources": [s.data for s in self.sources]}  # fmt: skip


def source_id(src: TritonSource | PrometheusSource | JsonSource | EnvoySource) -> str:
    if isinstance(src, EnvoySource):
        return f"envoy {src.admin}"
    if isinstance(src, PrometheusSource):
        return f"prometheus {src.url} {src.query}"
    if isinstance(src, JsonSource):
        return f"json {src.url}"
    return "triton"


def state_path(state_dir: Path, region: str) -> Path:
    return Path(state_dir) / "demand" / f"{region}.json"


def _load_state(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(d, dict) and d.get("format_version") == FORMAT_VERSION:
            return d
        log.warning("demand state %s: unsupported format, starting afresh", path)
    except FileNotFoundError:
        pass
    except ValueError:
        log.warning("demand state %s: not valid JSON, starting afresh", path)
    return {"format_version": FORMAT_VERSION, "sources": {}, "triton_counters": {}}


def read_demand(
    settings: DemandSettings,
    region: str,
    state_dir: Path,
    *,
    clients: Sequence[StatsClient] = (),
    base_dir: Path | None = None,
    persist: bool = True,
) -> Demand:
    """Read every source of ``settings``; remember what was read; fall back per source.

    ``persist=False`` (a dry ``plan``) leaves the state as it was, so the Triton source's counters
    still count from the last real run."""
    path = state_path(state_dir, region)
    state = _load_state(path)
    combined: dict[str, float] = {}
    statuses: list[SourceStatus] = []
    last_ms: dict[str, int] = {}
    for src in settings.sources:
        sid = source_id(src)
        try:
            if isinstance(src, PrometheusSource):
                counts = read_prometheus(src)
            elif isinstance(src, JsonSource):
                counts = read_json(src, base_dir)
            elif isinstance(src, EnvoySource):
                counts, state["envoy_counters"] = read_envoy(src, state.get("envoy_counters", {}))
            else:
                counts, state["triton_counters"], last_ms = read_triton(clients, state["triton_counters"])
        except DemandError as e:
            known = state["sources"].get(sid)
            then = f"using the demand read at {known['time']}" if known else "no earlier demand known"
            log.warning("region %s: %s; %s", region, e, then)
            statuses.append(SourceStatus(sid, False, len(known["counts"]) if known else 0, str(e),
                                         known["time"] if known else None))  # fmt: skip
            counts = dict(known["counts"]) if known else {}
        else:
            state["sources"][sid] = {"time": utc_now(), "counts": counts}
            statuses.append(SourceStatus(sid, True, len(counts)))
        for m, v in counts.items():
            combined[m] = max(combined.get(m, 0.0), float(v))
    if persist:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())
    return Demand(region, settings.window_s, combined, tuple(statuses), last_ms)
