"""User-defined metric gates against the real Prometheus the suite runs (tests/promstack.py): a query and
a threshold, judged at the end of a bake; the worst series is named; no data is a wait, never a pass."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.promstack import Exporter, Prometheus
from tritonops.config import MetricGateConfig
from tritonops.release.metric_gates import evaluate, render

QUERY = 'max by (version) (app_error_ratio{model="$model", version="$version"})'


def gate(url: str, **kw: object) -> MetricGateConfig:
    return MetricGateConfig(name="error ratio", url=url, query=QUERY, **{"max": 0.05, **kw})  # type: ignore[arg-type]


def test_a_prometheus_query_fails_passes_or_waits(exporter: Exporter, prometheus: Prometheus) -> None:
    exporter.text = (
        'app_error_ratio{model="m",version="2",server="a"} 0.01\n'
        'app_error_ratio{model="m",version="2",server="b"} 0.20\n'
        'app_error_ratio{model="m",version="3",server="a"} 0.02\n'
        'app_error_ratio{model="other",version="2",server="a"} 0.90\n'
    )
    prometheus.wait_for('app_error_ratio{model="m"}', 3)
    v = evaluate([gate(prometheus.url)], "m", 2, 1, 30)
    assert v.verdict == "fail" and v.readings == {"error ratio": 0.2}
    assert "metric gate 'error ratio': 0.2 > max 0.05 ({version=\"2\"})" in v.reasons[0], v.reasons

    v = evaluate([gate(prometheus.url)], "m", 3, 2, 30)
    assert v.verdict == "pass" and v.readings == {"error ratio": 0.02}, v.reasons

    v = evaluate([gate(prometheus.url)], "m", 9, 2, 30)  # no series for version 9 yet
    assert v.verdict == "wait" and "no data yet" in v.reasons[0]

    low = MetricGateConfig(name="throughput", url=prometheus.url, min=0.5,
                           query='min(app_error_ratio{model="$model"}) * 10')  # fmt: skip
    v = evaluate([gate(prometheus.url), low], "m", 3, 2, 30)
    assert v.verdict == "fail" and "metric gate 'throughput': 0.1 < min 0.5" in v.reasons[1], v.reasons

    bad = MetricGateConfig(name="typo", url=prometheus.url, max=1, query="sum(rate(app_error_ratio[$bake_s]))")
    v = evaluate([bad], "m", 3, 2, 30)
    assert v.verdict == "wait" and "cannot answer" in v.reasons[0] and "parse error" in v.reasons[0], v.reasons

    down = evaluate([gate("http://127.0.0.1:9")], "m", 3, 2, 30)
    assert down.verdict == "wait" and "cannot answer" in down.reasons[0]


def test_queries_are_filled_in_and_a_gate_needs_a_threshold() -> None:
    q = render('rate(x{model="$model",version="$version",old="$old_version"}[${bake_s}s])', "m", 3, 2, 29.6)
    assert q == 'rate(x{model="m",version="3",old="2"}[30s])'
    with pytest.raises(ValidationError, match="give max or min"):
        MetricGateConfig(name="g", url="http://p", query="up")
