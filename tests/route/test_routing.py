"""Requests through a real Envoy per region reach only real Tritons that serve the model, at the routed
version; misses get 404 or 503 + Retry-After; a rejected update keeps the last good routes; when a
region's servers are SIGKILLed, models another region serves fail over, and residency holds."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from tests.route.conftest import EU, US, Routed, infer_grpc, infer_http
from tritonops.cli import app
from tritonops.dev import stack
from tritonops.route import update as route_update
from tritonops.route.envoy import Admin
from tritonops.route.update import update_routes

pytestmark = pytest.mark.slow
RESIDENT = f"resident-{uuid.uuid4().hex[:6]}"  # allowed in eu-west-1 only


@pytest.fixture(scope="module")
def rt(routed_factory: Any) -> Iterator[Routed]:
    yield routed_factory({RESIDENT: {"regions": [EU]}})


def stats(rt: Routed, region: str, pattern: str) -> dict[str, int]:
    return {k: int(v) for k, v in Admin(rt.envoys[region].admin).stats(pattern).items() if v.isdigit()}


def hosts(rt: Routed, region: str, cluster: str) -> list[str]:
    return sorted(h["address"] for h in Admin(rt.envoys[region].admin).clusters().get(cluster, []))


def port_of(t: stack.TritonServer, kind: str = "http") -> str:
    return (t.http_url if kind == "http" else "http://" + t.grpc_url).removeprefix("http://")


def inference_count(t: stack.TritonServer, model: str) -> int:
    c = httpclient.InferenceServerClient(t.http_url.removeprefix("http://"))
    try:
        st = c.get_inference_statistics(model)
    except InferenceServerException:
        return 0
    return sum(int(s["inference_stats"]["success"]["count"]) for s in st.get("model_stats", []))


def raw(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        req = urllib.request.Request(url, data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_http_and_grpc_reach_only_servers_serving_the_model_at_the_routed_version(rt: Routed, unique) -> None:
    one, two = unique("one"), unique("two")
    rt.publish(EU, one, [1])
    rt.publish(EU, two, [1, 2])
    rt.load(EU, "a", one, 1)  # `one` on server a only
    rt.load(EU, "a", two, 1)  # `two`: v1 on a, v2 on b (a canary)
    rt.load(EU, "b", two, 2)
    report = update_routes(rt.config, EU)
    assert report.served.by_server() == {f"{EU}-a": {one: [1], two: [1]}, f"{EU}-b": {two: [2]}}
    a, b = rt.servers[EU]["a"], rt.servers[EU]["b"]
    assert hosts(rt, EU, f"http.{one}") == [port_of(a)]
    assert hosts(rt, EU, f"grpc.{one}") == [port_of(a, "grpc")]
    assert hosts(rt, EU, f"http.{two}.v2") == [port_of(b)]

    h, g = rt.http(EU), rt.grpc(EU)
    for _ in range(10):
        assert infer_http(h, one) == 1.0
        assert infer_grpc(g, one) == 1.0
        assert infer_http(h, two, "2") == 2.0  # Y = X * version: v2 answered, on b
        assert infer_http(h, two, "1") == 1.0
        assert infer_grpc(g, two, "2") == 2.0
        assert infer_grpc(g, two, "1") == 1.0
    # Every request went to a server holding the model: none was retried elsewhere, b never saw `one`.
    st = stats(rt, EU, rf"cluster\.(http|grpc)\.{one}\.upstream_rq_(retry|completed)$")
    assert st[f"cluster.http.{one}.upstream_rq_completed"] == 10
    assert st[f"cluster.grpc.{one}.upstream_rq_completed"] == 10
    assert st[f"cluster.http.{one}.upstream_rq_retry"] == 0
    assert inference_count(a, one) == 20
    assert inference_count(b, one) == 0
    assert stats(rt, EU, rf"cluster\.(http|grpc)\.{two}\.v\d\.upstream_rq_retry$") == {
        f"cluster.{k}.{two}.v{v}.upstream_rq_retry": 0 for k in ("http", "grpc") for v in (1, 2)
    }


def test_unknown_model_404_and_unplaced_model_503_with_retry_after_counted(rt: Routed, unique) -> None:
    placed_nowhere = unique("cold")
    rt.publish(EU, placed_nowhere, [1])  # published (known here) but loaded on no server of any region
    update_routes(rt.config, EU)
    base = rt.envoys[EU].url
    code, headers, body = raw(f"{base}/v2/models/{unique('nosuch')}/infer")
    assert code == 404 and b"unknown model" in body
    for _ in range(3):
        code, headers, _ = raw(f"{base}/v2/models/{placed_nowhere}/infer")
        assert code == 503
        assert headers.get("retry-after") == "7"  # regions.<r>.route.retry_after_s
    with pytest.raises(InferenceServerException) as exc:
        infer_grpc(rt.grpc(EU), placed_nowhere)
    assert "UNAVAILABLE" in str(exc.value.status())
    with pytest.raises(InferenceServerException) as exc:
        infer_grpc(rt.grpc(EU), unique("nosuch"))
    assert exc.value.status() != "StatusCode.OK"
    # Misses are counted by Envoy itself (what the `envoy` demand source reads).
    st = stats(rt, EU, rf"cluster\.(http|grpc)\.{placed_nowhere}\.upstream_cx_none_healthy$")
    assert sum(st.values()) == 4


def test_rejected_update_keeps_the_last_good_routes_and_exits_non_zero(rt: Routed, unique, monkeypatch) -> None:
    m = unique("good")
    rt.publish(EU, m, [1])
    rt.load(EU, "a", m, 1)
    before = update_routes(rt.config, EU).version
    cds = Path(rt.envoys[EU].config_dir) / "cds.json"
    good_file = cds.read_bytes()
    real_render = route_update.render

    def bad_render(inp: Any) -> Any:
        cfg = real_render(inp)
        cfg.clusters[0]["common_lb_config"]["healthy_panic_threshold"]["value"] = 250.0  # Envoy refuses: > 100%
        cfg.version = "bad" + cfg.version
        return cfg

    other = unique("new")
    rt.publish(EU, other, [1])
    rt.load(EU, "b", other, 1)
    monkeypatch.setattr(route_update, "render", bad_render)
    res = CliRunner().invoke(app, ["--config", str(rt.config_path), "route", "--region", EU])
    assert res.exit_code == 1, res.output
    assert "rejected cds.json" in res.stderr and EU in res.stderr and before in res.stderr
    assert Admin(rt.envoys[EU].admin).subscription("cds")[0] == before  # Envoy kept the last good config
    assert cds.read_bytes() == good_file  # and so did the file it reloads from
    assert infer_http(rt.http(EU), m) == 1.0  # the last good routes still serve
    monkeypatch.setattr(route_update, "render", real_render)
    res = CliRunner().invoke(app, ["--config", str(rt.config_path), "route", "--region", EU, "-o", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["served"][f"{EU}-b"][other] == [1]
    assert infer_http(rt.http(EU), other) == 1.0


def test_a_server_that_does_not_answer_is_left_out_and_the_run_exits_5(rt: Routed, unique) -> None:
    m = unique("still")
    rt.publish(EU, m, [1])
    rt.load(EU, "a", m, 1)
    dead = f"http://127.0.0.1:{stack.free_port()}"
    servers = list(rt.data["regions"][EU]["servers"])

    def add(d: dict[str, Any]) -> None:
        d["regions"][EU]["servers"] = [*servers, {"name": f"{EU}-gone", "http_url": dead}]

    rt.rewrite(add)
    try:
        res = CliRunner().invoke(app, ["--config", str(rt.config_path), "route", "--region", EU, "-o", "json"])
        assert res.exit_code == 5, res.output
        assert f"server {EU}-gone not read" in res.stderr
        assert f"{EU}-gone" in json.loads(res.stdout)["unreachable"]
        assert infer_http(rt.http(EU), m) == 1.0  # applied: the others are routed
    finally:
        rt.rewrite(lambda d: d["regions"][EU].update(servers=servers))


def test_canary_by_traffic_share_splits_a_models_requests_between_versions(rt: Routed, unique) -> None:
    m = unique("canary")
    rt.publish(EU, m, [1, 2])
    rt.load(EU, "a", m, 1)
    rt.load(EU, "b", m, 2)  # the canary server

    def share(on: bool) -> Callable[[dict[str, Any]], None]:
        def edit(d: dict[str, Any]) -> None:
            d["regions"][EU]["route"]["canary_by_traffic"] = on
            d["release"] = {"rollout": {"canary_share": 0.2}} if on else {}

        return edit

    rt.rewrite(share(True))
    try:
        update_routes(rt.config, EU)
        h = rt.http(EU)
        answers = [infer_http(h, m) for _ in range(200)]
        # 20% of requests (binomial: 40 +- 6), not one server in two (100).
        assert 20 <= answers.count(2.0) <= 65, answers.count(2.0)
        assert answers.count(1.0) + answers.count(2.0) == 200
    finally:
        rt.rewrite(share(False))
        update_routes(rt.config, EU)


def kill(t: stack.TritonServer) -> None:
    p = psutil.Process(t.record.pid)
    children = p.children(recursive=True)
    p.kill()
    for c in children:
        with contextlib.suppress(psutil.Error):
            c.kill()


class Load:
    """Constant HTTP traffic for one model through one Envoy; records each request's outcome and time."""

    def __init__(self, url: str, model: str) -> None:
        self.client = httpclient.InferenceServerClient(url, network_timeout=30)
        self.model = model
        self.results: list[tuple[float, bool, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                infer_http(self.client, self.model)
                self.results.append((t, True, ""))
            except InferenceServerException as e:
                self.results.append((t, False, str(e)[:100]))
            time.sleep(0.01)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_failover_to_a_peer_region_when_a_region_is_killed_and_residency_holds(rt: Routed, unique) -> None:
    both = unique("both")
    for r in (EU, US):
        rt.publish(r, both, [1])
        rt.load(r, "a", both, 1)
    rt.publish(EU, RESIDENT, [1])
    rt.load(EU, "a", RESIDENT, 1)
    # Published and loaded in us-east-1 by mistake (by hand): residency still keeps it off the data path.
    rt.publish(US, RESIDENT, [1])
    rt.load(US, "a", RESIDENT, 1)
    us_report = update_routes(rt.config, US)
    eu_report = update_routes(rt.config, EU)
    assert both in eu_report.peers[US] and RESIDENT not in eu_report.peers[US]
    assert RESIDENT not in us_report.known
    code, _, _ = raw(f"{rt.envoys[US].url}/v2/models/{RESIDENT}/infer")
    assert code == 404  # us-east-1 never answers (or forwards) the eu-west-1-only model
    assert infer_http(rt.http(EU), RESIDENT) == 1.0

    with Load(rt.envoys[EU].listen, both) as load:
        time.sleep(1.0)
        killed_at = time.monotonic()
        for t in rt.servers[EU].values():
            kill(t)
        time.sleep(4.0)
    after = [ok for t, ok, _ in load.results if t > killed_at]
    failed = [why for _, ok, why in load.results if not ok]
    assert len(after) > 20 and all(after[-10:]), failed  # served from us-east-1 by now
    assert not failed, failed  # retries moved even the requests in flight to the peer region
    st = stats(rt, US, rf"cluster\.http\.{both}(\.local)?\.upstream_rq_completed$")
    assert st.get(f"cluster.http.{both}.local.upstream_rq_completed", 0) >= len(after) - 1
    # The eu-west-1-only model is not sent to us-east-1, though a server there has it loaded.
    code, headers, _ = raw(f"{rt.envoys[EU].url}/v2/models/{RESIDENT}/infer")
    assert code == 503
    assert inference_count(rt.servers[US]["a"], RESIDENT) == 0
