"""Read one demand source: requests per model over its window.

Each reader returns ``{model: requests}`` or raises :class:`DemandError` with a one-line message
naming the source. Prometheus: an instant vector from ``/api/v1/query``; the model comes from a
label, or from a request path label (``/v2/models/<name>[/versions/<n>]/infer``); series that map
to the same model are summed. JSON: ``{"models": {"<name>": <count>}}`` from a file or an http(s)
URL. Triton: ``inference_count`` per loaded model version, as a difference from the counters of
the previous run (a counter that went down means a restart: the new value counts whole).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from tritonops.demand.settings import EnvoySource, JsonSource, PrometheusSource
from tritonops.errors import TritonOpsError

PATH_RE = re.compile(r"^/v2/models/([^/]+)(?:/versions/[0-9]+)?/infer/?$")


class DemandError(TritonOpsError):
    """A demand source could not be read or made no sense (the message names the source)."""


class StatsClient(Protocol):
    """What the Triton source needs of :class:`tritonops.triton.client.ControlClient`."""

    name: str

    def statistics(self, model: str | None = None) -> list[dict[str, Any]]: ...


def _get(url: str, timeout_s: float, what: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - URLs from the operator's config
            return bytes(r.read())
    except urllib.error.HTTPError as e:
        detail = ""
        try:  # Prometheus explains a bad query in a JSON body ({"error": "parse error ..."})
            err = json.loads(e.read()).get("error")
            detail = f": {' '.join(str(err).split())}" if err else ""
        except (ValueError, AttributeError, OSError):
            pass
        raise DemandError(f"{what}: HTTP {e.code} {e.reason}{detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DemandError(f"{what}: unreachable ({reason})") from None


def _count(v: Any, where: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DemandError(f"{where}: not a number: {v!r}") from None
    if not math.isfinite(x) or x < 0:
        raise DemandError(f"{where}: not a finite count >= 0: {v!r}")
    return x


def read_prometheus(src: PrometheusSource) -> dict[str, float]:
    what = f"demand source prometheus {src.url}"
    url = src.url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": src.query})
    try:
        doc = json.loads(_get(url, src.timeout_s, what))
    except ValueError:
        raise DemandError(f"{what}: answer is not JSON") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        err = doc.get("error") if isinstance(doc, dict) else None
        raise DemandError(f"{what}: query failed: {err or 'status is not success'}")
    data = doc.get("data") or {}
    if data.get("resultType") != "vector":
        raise DemandError(f"{what}: query must give an instant vector, got {data.get('resultType')!r}")
    out: dict[str, float] = {}
    for series in data.get("result", []):
        labels = series.get("metric", {})
        if src.path_label:
            m = PATH_RE.match(str(labels.get(src.path_label, "")))
            model = urllib.parse.unquote(m.group(1)) if m else None
        else:
            model = labels.get(src.model_label or "")
        if not model:
            continue  # not a model's series (another path, no label): not demand for a model
        v = _count((series.get("value") or [None, None])[1], f"{what}: model {model!r}")
        out[model] = out.get(model, 0.0) + v
    return out


def read_json(src: JsonSource, base: Path | None = None) -> dict[str, float]:
    what = f"demand source json {src.url}"
    if src.url.startswith(("http://", "https://")):
        raw = _get(src.url, src.timeout_s, what)
    else:
        path = Path(src.url[len("file://"):] if src.url.startswith("file://") else src.url)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DemandError(f"{what}: cannot read ({e.strerror or e})") from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise DemandError(f"{what}: not JSON") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise DemandError(f"{what}: models: expected an object of model name -> request count")
    return {str(m): _count(v, f"{what}: models.{m}") for m, v in models.items()}


def read_triton(
    clients: Sequence[StatsClient], previous: Mapping[str, int]
) -> tuple[dict[str, float], dict[str, int], dict[str, int]]:
    """(requests per model since the last run, counters to remember, last inference ms per model).

    A server that cannot be read makes the whole source fail (a partial sum would read as less demand).
    """
    counts: dict[str, float] = {}
    counters: dict[str, int] = {}
    last: dict[str, int] = {}
    for c in clients:
        try:
            rows = c.statistics()
        except TritonOpsError as e:
            raise DemandError(f"demand source triton: server {c.name}: {e}") from None
        for r in rows:
            key = f"{c.name}|{r['name']}|{r['version']}"
            now = int(r.get("inference_count", 0))
            before = previous.get(key)
            delta = now if before is None or now < before else now - before
            counters[key] = now
            counts[r["name"]] = counts.get(r["name"], 0.0) + delta
            last[r["name"]] = max(last.get(r["name"], 0), int(r.get("last_inference", 0)))
    return counts, counters, last


# cluster.<http|grpc>.<model>[.local|.vN].<counter>: the clusters ``tritonops.route`` renders per model.
ENVOY_STAT_RE = re.compile(
    r"^cluster\.(?:http|grpc)\.(.+?)(?:\.local|\.v[0-9]+)?\."
    r"(upstream_rq_total|upstream_rq_retry|upstream_cx_none_healthy)$"
)


def read_envoy(src: EnvoySource, previous: Mapping[str, int]) -> tuple[dict[str, float], dict[str, int]]:
    """(requests per model since the last run, counters to remember) from Envoy's ``/stats``.

    A request is an upstream request that was not a retry, or one that found no replica at all
    (``upstream_cx_none_healthy``: a miss, answered 503): so a model placed nowhere gets demand."""
    what = f"demand source envoy {src.admin}"
    counters_re = "upstream_rq_total|upstream_rq_retry|upstream_cx_none_healthy"
    pattern = urllib.parse.quote(rf"^cluster\.(http|grpc)\..*\.({counters_re})$")
    text = _get(f"http://{src.admin}/stats?filter={pattern}", src.timeout_s, what).decode(errors="replace")
    counts: dict[str, float] = {}
    counters: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        m = ENVOY_STAT_RE.match(name.strip())
        if not sep or m is None or not value.strip().isdigit():
            continue
        now = int(value)
        before = previous.get(name)
        delta = now if before is None or now < before else now - before  # lower: Envoy restarted
        counters[name] = now
        sign = -1 if m.group(2) == "upstream_rq_retry" else 1
        counts[m.group(1)] = counts.get(m.group(1), 0.0) + sign * delta
    return {k: max(0.0, v) for k, v in counts.items()}, counters
