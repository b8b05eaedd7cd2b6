"""Gates: Triton's own per-model, per-version Prometheus counters, read from each server's /metrics.

A step's verdict compares snapshots of the counters: before the step was applied (``pre``), at the
start of its bake (``base``) and now:

- traffic: requests (success + failure) to the new version on the step's servers; fewer than
  ``min_requests`` -> ``wait`` ("too little traffic", never a pass by default);
- failure rate: ``nv_inference_request_failure`` over all requests, above ``max_failure_rate`` -> fail;
- latency and queue time: mean ``nv_inference_request_duration_us`` / ``nv_inference_queue_duration_us``
  per request of the new version, against a reference: the old version on the region's other servers
  over the same window when they had ``min_requests``, else the old version's own counters up to the
  start of the step (a baseline taken before it). Worse by more than the ratio AND by more than
  ``min_latency_delta_ms`` -> fail. No reference with enough requests -> said, and not judged.
- a counter that went down means Triton restarted (or reloaded the version: Triton 2.51 re-creates a
  version when its version policy changes, and the old instance's counters can still be the ones
  read at the baseline): the step re-baselines and its bake starts again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tritonops.config import Config, GateConfig

log = logging.getLogger(__name__)

SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
DURATION = "nv_inference_request_duration_us"
QUEUE = "nv_inference_queue_duration_us"
_NAMES = {SUCCESS: "success", FAILURE: "failure", DURATION: "duration_us", QUEUE: "queue_us"}


@dataclass
class Counters:
    success: float = 0.0
    failure: float = 0.0
    duration_us: float = 0.0
    queue_us: float = 0.0

    @property
    def requests(self) -> float:
        return self.success + self.failure

    def minus(self, o: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(asdict(self).values(), asdict(o).values(), strict=True)))

    def plus(self, o: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(asdict(self).values(), asdict(o).values(), strict=True)))

    def went_down(self, before: Counters) -> bool:
        return any(a < b for a, b in zip(asdict(self).values(), asdict(before).values(), strict=True))


# server -> version (str) -> counters; a server that did not answer is absent.
Snapshot = dict[str, dict[str, dict[str, float]]]


def counters_from_text(text: str, model: str) -> dict[str, Counters]:
    """version -> summed counters (failure reasons and GPU labels summed) of ``model``."""
    from tritonops.triton.metrics import parse_prometheus

    out: dict[str, Counters] = {}
    for name, labels, value in parse_prometheus(text):
        attr = _NAMES.get(name)
        if attr is None or labels.get("model") != model:
            continue
        c = out.setdefault(labels.get("version", ""), Counters())
        setattr(c, attr, getattr(c, attr) + value)
    return out


def take_snapshot(cfg: Config, regions: list[str], model: str) -> tuple[Snapshot, list[str]]:
    from tritonops.errors import TritonOpsError
    from tritonops.triton.client import ControlClient

    snap: Snapshot = {}
    notes: list[str] = []
    for region in regions:
        for s in cfg.region(region).servers:
            try:
                text = ControlClient.from_server(s, timeout_s=5.0).metrics()
            except TritonOpsError as e:
                notes.append(f"server {s.name!r}: metrics not read: {e}")
                continue
            snap[s.name] = {v: asdict(c) for v, c in counters_from_text(text, model).items()}
    return snap, notes


def _get(snap: Snapshot, server: str, version: int) -> Counters | None:
    d = snap.get(server, {}).get(str(version))
    return Counters(**d) if d is not None else None


def _window(base: Snapshot, now: Snapshot, servers: list[str], version: int) -> Counters:
    total = Counters()
    for s in servers:
        b, n = _get(base, s, version), _get(now, s, version)
        if n is not None:
            total = total.plus(n.minus(b) if b is not None else n)
    return total


@dataclass
class Verdict:
    verdict: str  # pass | fail | wait
    reasons: list[str] = field(default_factory=list)
    readings: dict[str, Any] = field(default_factory=dict)
    restarted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": self.reasons, "readings": self.readings,
                "restarted": self.restarted}  # fmt: skip


def restarted_servers(base: Snapshot, now: Snapshot) -> list[str]:
    out = []
    for s, versions in sorted(now.items()):
        for v, d in versions.items():
            b = base.get(s, {}).get(v)
            if b is not None and Counters(**d).went_down(Counters(**b)):
                out.append(s)
                break
    return out


def _mean_ms(c: Counters, attr: str) -> float | None:
    return getattr(c, attr) / c.requests / 1000.0 if c.requests > 0 else None


def _reference(
    g: GateConfig,
    pre: Snapshot,
    base: Snapshot,
    now: Snapshot,
    step: list[str],
    control: list[str],
    old: int | None,
) -> tuple[Counters | None, str]:
    if old is None:
        return None, "no old version to compare with"
    window = _window(base, now, control, old)
    if control and window.requests >= g.min_requests:
        return window, f"version {old} on {', '.join(control)} over the same window"
    before = Counters()
    for s in [*step, *control]:
        c = _get(pre, s, old)
        if c is not None:
            before = before.plus(c)
    if before.requests >= g.min_requests:
        return before, f"version {old} on the same servers before the step"
    return None, f"version {old} had {int(window.requests + before.requests)} requests: no latency reference"


def evaluate(
    g: GateConfig,
    pre: Snapshot,
    base: Snapshot,
    now: Snapshot,
    version: int,
    old: int | None,
    step_servers: list[str],
    control_servers: list[str],
) -> Verdict:
    restarted = restarted_servers(base, now)
    if restarted:
        return Verdict("wait", [f"counters went down on {', '.join(restarted)} (Triton restarted, or the "
                                "version was reloaded): re-baselined, the bake starts again"],
                       restarted=True)  # fmt: skip
    missing = [s for s in step_servers if s not in now]
    if missing:
        return Verdict("wait", [f"metrics not read from {', '.join(missing)}"])
    new = _window(base, now, step_servers, version)
    readings: dict[str, Any] = {"requests": int(new.requests), "failures": int(new.failure),
                                "min_requests": g.min_requests}  # fmt: skip
    if new.requests < g.min_requests:
        return Verdict("wait", [f"too little traffic: {int(new.requests)} of {g.min_requests} requests "
                                f"to version {version} so far"], readings)  # fmt: skip
    rate = new.failure / new.requests
    readings["failure_rate"] = round(rate, 4)
    reasons: list[str] = []
    if rate > g.max_failure_rate:
        reasons.append(f"failure rate {rate:.1%} of {int(new.requests)} requests > {g.max_failure_rate:.1%}")
    ref, why = _reference(g, pre, base, now, step_servers, control_servers, old)
    readings["reference"] = why
    for attr, limit, label in (("duration_us", g.max_latency_ratio, "latency"),
                               ("queue_us", g.max_queue_ratio, "queue time")):  # fmt: skip
        mine = _mean_ms(new, attr)
        theirs = _mean_ms(ref, attr) if ref is not None else None
        readings[f"{label.replace(' ', '_')}_ms"] = None if mine is None else round(mine, 3)
        readings[f"reference_{label.replace(' ', '_')}_ms"] = None if theirs is None else round(theirs, 3)
        if mine is None or theirs is None:
            continue
        if mine > theirs * limit and mine - theirs > g.min_latency_delta_ms:
            reasons.append(f"{label} {mine:.2f} ms > {limit}x {theirs:.2f} ms ({why})")
    return Verdict("fail" if reasons else "pass", reasons, readings)


def served_ok(served: Mapping[str, Mapping[str, Any]], model: str, version: int, servers: list[str]) -> Verdict:
    """The health gate reconcile already applies (READY + warmup), read back: each server serves it."""
    down = [s for s in servers if not served.get(s, {}).get("reachable")]
    if down:
        return Verdict("wait", [f"server(s) {', '.join(down)} not reachable"])
    bad = [s for s in servers if version not in served[s]["models"].get(model, [])]
    if bad:
        return Verdict("fail", [f"health: {', '.join(bad)} do not serve version {version} "
                                "(load or warmup failed; see reconcile's journal and quarantine)"])  # fmt: skip
    return Verdict("pass")
