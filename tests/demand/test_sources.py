"""Demand sources against real servers on loopback: Prometheus (Debian binary), a JSON feed over HTTP and file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from tests.promstack import Exporter, Prometheus
from tritonops.demand.read import read_demand, state_path
from tritonops.demand.settings import DemandSettings, JsonSource, PrometheusSource
from tritonops.demand.sources import DemandError, read_json, read_prometheus

GATEWAY = """# TYPE gateway_requests_total counter
gateway_requests_total{{model="alpha",path="/v2/models/alpha/infer"}} {a}
gateway_requests_total{{model="beta",path="/v2/models/beta/versions/3/infer"}} {b}
gateway_requests_total{{model="beta",path="/v2/models/beta/infer"}} 5
gateway_requests_total{{path="/v2/health/ready"}} 99
"""


def test_prometheus_model_label_and_path_label(prometheus: Prometheus, exporter: Exporter) -> None:
    exporter.text = GATEWAY.format(a=120, b=30)
    prometheus.wait_for("gateway_requests_total", 4)
    by_label = read_prometheus(PrometheusSource(url=prometheus.url, query="gateway_requests_total"))
    assert by_label == {"alpha": 120.0, "beta": 35.0}  # two beta series summed; the health path has no model
    by_path = read_prometheus(
        PrometheusSource(url=prometheus.url, query="sum by (path) (gateway_requests_total)", path_label="path")
    )
    assert by_path == {"alpha": 120.0, "beta": 35.0}
    with pytest.raises(DemandError, match=r"prometheus .*: HTTP 400 Bad Request: .*parse error"):
        read_prometheus(PrometheusSource(url=prometheus.url, query="sum by (("))
    with pytest.raises(DemandError, match="instant vector"):
        read_prometheus(PrometheusSource(url=prometheus.url, query="gateway_requests_total[1m]"))


def test_prometheus_down_falls_back_to_last_known_demand(
    prometheus: Prometheus, exporter: Exporter, tmp_path: Path
) -> None:
    exporter.text = GATEWAY.format(a=7, b=3)
    prometheus.wait_for("gateway_requests_total", 4)
    good = DemandSettings(sources=[PrometheusSource(url=prometheus.url, query="gateway_requests_total")])
    first = read_demand(good, "eu", tmp_path)
    assert first.complete and first.counts == {"alpha": 7.0, "beta": 8.0}
    dead = DemandSettings(sources=[PrometheusSource(url="http://127.0.0.1:9", query="gateway_requests_total",
                                                    timeout_s=2)])  # fmt: skip
    # the state is per source: the dead URL is a different source, with nothing known
    lost = read_demand(dead, "eu", tmp_path)
    assert not lost.complete and lost.counts == {} and "unreachable" in lost.errors[0]
    # the same source failing (bad query now) falls back to what it read last
    state = json.loads(state_path(tmp_path, "eu").read_text())
    sid = next(iter(state["sources"]))
    state["sources"]["prometheus http://127.0.0.1:9 gateway_requests_total"] = state["sources"][sid]
    state_path(tmp_path, "eu").write_text(json.dumps(state))
    back = read_demand(dead, "eu", tmp_path)
    assert back.complete and back.counts == {"alpha": 7.0, "beta": 8.0}
    assert back.sources[0].fallback_from == state["sources"][sid]["time"] and not back.sources[0].ok


@pytest.fixture
def feed() -> Iterator[tuple[int, dict[str, bytes]]]:
    body: dict[str, bytes] = {"doc": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            code = 200 if self.path == "/counts.json" else 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(body["doc"] if code == 200 else b"")

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], body
    srv.shutdown()
    srv.server_close()


def test_json_feed_over_http_and_fallback(feed: tuple[int, dict[str, bytes]], tmp_path: Path) -> None:
    port, body = feed
    body["doc"] = json.dumps({"models": {"a": 10, "b": 2.5}}).encode()
    s = DemandSettings(sources=[JsonSource(url=f"http://127.0.0.1:{port}/counts.json")])
    assert read_demand(s, "us", tmp_path).counts == {"a": 10.0, "b": 2.5}
    body["doc"] = b"{not json"
    d = read_demand(s, "us", tmp_path)
    assert d.counts == {"a": 10.0, "b": 2.5} and d.complete and "not JSON" in d.errors[0]
    with pytest.raises(DemandError, match="HTTP 404"):
        read_json(JsonSource(url=f"http://127.0.0.1:{port}/missing.json"))


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ('{"models": {"a": -1}}', "models.a: not a finite count >= 0"),
        ('{"models": {"a": "many"}}', "models.a: not a number"),
        ('{"models": [1, 2]}', "models: expected an object"),
        ("[]", "models: expected an object"),
        ("nope", "not JSON"),
    ],
)
def test_json_feed_file_bad_inputs(tmp_path: Path, doc: str, error: str) -> None:
    f = tmp_path / "counts.json"
    f.write_text(doc)
    with pytest.raises(DemandError, match=error):
        read_json(JsonSource(url=str(f)))


def test_json_feed_file_relative_and_missing(tmp_path: Path) -> None:
    (tmp_path / "counts.json").write_text('{"models": {"x": 3}}')
    assert read_json(JsonSource(url="counts.json"), base=tmp_path) == {"x": 3.0}
    assert read_json(JsonSource(url=f"file://{tmp_path}/counts.json")) == {"x": 3.0}
    with pytest.raises(DemandError, match="cannot read"):
        read_json(JsonSource(url=str(tmp_path / "gone.json")))


def test_sources_combine_by_maximum(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"models": {"x": 3, "y": 10}}')
    (tmp_path / "b.json").write_text('{"models": {"x": 5}}')
    s = DemandSettings(sources=[JsonSource(url=str(tmp_path / "a.json")), JsonSource(url=str(tmp_path / "b.json"))])
    assert read_demand(s, "r", tmp_path).counts == {"x": 5.0, "y": 10.0}


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="model_label or path_label"):
        PrometheusSource(url="http://p", query="q", model_label=None)
    with pytest.raises(ValueError):
        DemandSettings.model_validate({"sources": [{"kind": "graphite", "url": "x"}]})
    s = DemandSettings.model_validate({"window_s": 600, "sources": [{"kind": "triton"}, {"kind": "json", "url": "c.json"}]})
    assert [x.kind for x in s.sources] == ["triton", "json"]


def test_a_dry_read_leaves_the_remembered_demand_as_it_was(tmp_path: Path) -> None:
    feed = tmp_path / "counts.json"
    feed.write_text(json.dumps({"models": {"alpha": 4}}))
    settings = DemandSettings(sources=[JsonSource(url=str(feed))])
    assert read_demand(settings, "eu", tmp_path / "state", persist=False).counts == {"alpha": 4.0}
    assert not state_path(tmp_path / "state", "eu").exists()  # `tritonops plan` remembers nothing
    read_demand(settings, "eu", tmp_path / "state")
    feed.write_text("not json")
    back = read_demand(settings, "eu", tmp_path / "state", persist=False)
    assert back.complete and back.counts == {"alpha": 4.0} and back.sources[0].fallback_from
