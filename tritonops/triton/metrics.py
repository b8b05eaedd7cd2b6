"""Triton's metrics endpoint: the scrape, and the Prometheus text format parser.

The parser is the one reader of Prometheus text in tritonops: memory probes (memory use per GPU)
and rollout gates (failures, latency and queue time per model and version) both use it.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from urllib.parse import urlparse

from tritonops.errors import TritonError, TritonTimeout, TritonUnreachable

METRICS_TIMEOUT_S = 10.0


def fetch_metrics(metrics_url: str, timeout_s: float = METRICS_TIMEOUT_S) -> str:
    u = urlparse(metrics_url)
    if u.scheme not in ("http", "https"):
        raise TritonError(f"metrics {metrics_url}: not an http:// or https:// URL")
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as r:  # noqa: S310 - scheme checked above
            return str(r.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        raise TritonError(f"metrics {metrics_url}: HTTP {e.code} {e.reason}") from None
    except TimeoutError:
        raise TritonTimeout(f"metrics {metrics_url}: timed out after {timeout_s:g}s") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TritonUnreachable(f"metrics {metrics_url}: unreachable ({one_line(str(reason))})") from None


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line; comments and malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group("labels") or ""))
        out.append((m.group("name"), labels, value))
    return out


def one_line(s: str) -> str:
    return " ".join(s.split())
