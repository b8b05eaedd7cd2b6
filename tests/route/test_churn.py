"""Make-before-break: reconcile loads, moves and evicts models under constant HTTP and gRPC traffic
through the region's Envoy, and not one request fails.

Scale (a 2-core machine shared with other engineers): 6 python-backend models over eu-west-1's two
servers, 3 reconcile runs. A move is placement's two steps (a replica added, then the old one removed);
an evicted model that us-east-1 also serves fails over there.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from tests.route.conftest import EU, US, Routed, infer_grpc, infer_http
from tritonops.cli import app
from tritonops.route.update import update_routes

pytestmark = pytest.mark.slow


class Traffic:
    """Round-robin requests over models, HTTP and gRPC threads, through one Envoy."""

    def __init__(self, listen: str, models: list[str]) -> None:
        self.listen, self.models = listen, models
        self.ok = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(kind,), daemon=True) for kind in ("http", "grpc")]

    def run(self, kind: str) -> None:
        h = httpclient.InferenceServerClient(self.listen, network_timeout=60)
        g = grpcclient.InferenceServerClient(self.listen)
        for m in itertools.cycle(self.models):
            if self.stop.is_set():
                return
            try:
                y = infer_http(h, m) if kind == "http" else infer_grpc(g, m)
                assert y == 1.0
                self.ok += 1
            except (InferenceServerException, AssertionError) as e:
                self.failed.append(f"{kind} {m}: {str(e)[:120]}")
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def place(rt: Routed, a: list[str], b: list[str]) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["regions"][EU]["servers"][0]["models"] = a
        d["regions"][EU]["servers"][1]["models"] = b

    rt.rewrite(edit)


def reconcile(rt: Routed) -> dict[str, Any]:
    import json

    res = CliRunner().invoke(app, ["--config", str(rt.config_path), "reconcile", "--region", EU, "-o", "json"])
    assert res.exit_code == 0, res.output
    return dict(json.loads(res.stdout))


def served(rt: Routed) -> dict[str, dict[str, list[int]]]:
    return update_routes(rt.config, EU, dry_run=True).served.by_server()


def test_reconcile_loads_moves_and_evicts_under_traffic_with_no_failed_request(routed_factory, unique) -> None:
    rt: Routed = routed_factory()
    m = [unique(f"c{i}") for i in range(6)]
    for name in m:
        rt.publish(EU, name, [1])
    for name in (m[2], m[5]):  # us-east-1 serves these too: the region's failover
        rt.publish(US, name, [1])
        rt.load(US, "a", name, 1)
    update_routes(rt.config, US)
    place(rt, [m[0], m[1], m[2]], [m[3], m[4]])
    reconcile(rt)
    assert served(rt) == {f"{EU}-a": {x: [1] for x in m[:3]}, f"{EU}-b": {x: [1] for x in m[3:5]}}

    with Traffic(rt.envoys[EU].listen, m) as traffic:
        time.sleep(1.0)
        # Load m5 on a, a second replica of m1 on b (a move's first step), evict m2 (us-east-1 has it).
        place(rt, [m[0], m[1], m[5]], [m[3], m[4], m[1]])
        doc = reconcile(rt)
        kinds = sorted((r["kind"], r["model"]) for r in doc["results"])
        assert ("evict", m[2]) in kinds or ("unload", m[2]) in kinds
        assert ("load", m[5]) in kinds and ("load", m[1]) in kinds
        time.sleep(1.0)
        # The move's second step: m1 leaves a.
        place(rt, [m[0], m[5]], [m[3], m[4], m[1]])
        doc = reconcile(rt)
        assert [(r["kind"], r["server"]) for r in doc["results"] if r["model"] == m[1]][0][1] == f"{EU}-a"
        time.sleep(1.0)
    assert served(rt) == {f"{EU}-a": {m[0]: [1], m[5]: [1]}, f"{EU}-b": {x: [1] for x in (m[1], m[3], m[4])}}
    assert traffic.ok > 50
    assert traffic.failed == [], traffic.failed[:5]
