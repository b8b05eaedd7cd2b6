"""User-defined metric gates: a Prometheus query and a threshold, judged at the end of each step's bake
(as Argo Rollouts' analysis and SageMaker's alarm-based rollback do).

``$model``, ``$version``, ``$old_version`` and ``$bake_s`` in the query are filled in, so one gate
serves every model: ``sum(rate(app_errors_total{model="$model",version="$version"}[${bake_s}s]))``.
Every series the query returns must stay within ``max`` / ``min``; the worst one is named. A query that
returns nothing (or NaN, e.g. a ratio of zero requests) has no verdict yet: the step waits, as it does
for too little traffic. A Prometheus that cannot be read is a wait, never a pass.
"""

from __future__ import annotations

import contextlib
import json
import math
import string
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tritonops.config import MetricGateConfig

TIMEOUT_S = 10.0


@dataclass
class MetricVerdict:
    verdict: str  # pass | fail | wait
    reasons: list[str] = field(default_factory=list)
    readings: dict[str, float | None] = field(default_factory=dict)  # gate -> its worst value


def render(query: str, model: str, version: int, old_version: int | None, bake_s: float) -> str:
    values = {"model": model, "version": str(version), "old_version": "" if old_version is None else str(old_version),
              "bake_s": str(max(1, int(round(bake_s))))}  # fmt: skip
    return string.Template(query).safe_substitute(values)


def query(url: str, promql: str) -> list[tuple[dict[str, str], float]]:
    """An instant query: (labels, value) per series; ValueError with the reason when it fails."""
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(full, timeout=TIMEOUT_S) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError):
            body = json.loads(body).get("error", body)
        raise ValueError(f"HTTP {e.code}: {body}") from None
    except (OSError, ValueError) as e:
        raise ValueError(str(getattr(e, "reason", e))) from None
    data = doc.get("data") or {}
    if doc.get("status") != "success":
        raise ValueError(str(doc.get("error", "query failed")))
    if data.get("resultType") == "scalar":
        return [({}, float(data["result"][1]))]
    if data.get("resultType") != "vector":
        raise ValueError(f"the query returns a {data.get('resultType')}, not an instant vector or a scalar")
    return [(dict(s.get("metric", {})), float(s["value"][1])) for s in data.get("result", [])]


def _series(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "{}"


def _judge(g: MetricGateConfig, rows: list[tuple[dict[str, str], float]]) -> tuple[str, str, float | None]:
    values = [(lab, v) for lab, v in rows if not math.isnan(v)]
    if not values:
        return "wait", f"metric gate {g.name!r}: no data yet", None
    if g.max is not None:
        lab, v = max(values, key=lambda x: x[1])
        if v > g.max:
            return "fail", f"metric gate {g.name!r}: {v:.4g} > max {g.max:g} ({_series(lab)})", v
    if g.min is not None:
        lab, v = min(values, key=lambda x: x[1])
        if v < g.min:
            return "fail", f"metric gate {g.name!r}: {v:.4g} < min {g.min:g} ({_series(lab)})", v
    worst = max(v for _, v in values) if g.max is not None else min(v for _, v in values)
    return "pass", f"metric gate {g.name!r}: {worst:.4g} within its threshold", worst


def evaluate(
    gates: Sequence[MetricGateConfig], model: str, version: int, old_version: int | None, bake_s: float
) -> MetricVerdict:
    out = MetricVerdict("pass")
    for g in gates:
        promql = render(g.query, model, version, old_version, bake_s)
        try:
            rows = query(g.url, promql)
        except ValueError as e:
            verdict, reason, value = "wait", f"metric gate {g.name!r}: {g.url} cannot answer {promql!r}: {e}", None
        else:
            verdict, reason, value = _judge(g, rows)
        out.reasons.append(reason)
        out.readings[g.name] = value
        if verdict == "fail":
            out.verdict = "fail"
        elif verdict == "wait" and out.verdict == "pass":
            out.verdict = "wait"
    return out


def to_json(v: MetricVerdict) -> dict[str, Any]:
    return {"verdict": v.verdict, "reasons": v.reasons, "readings": v.readings}
