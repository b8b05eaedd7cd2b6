"""Demand-driven placement end to end: a real Triton, a real S3 server, a real Prometheus.

A load generator sends Zipf-distributed requests "through a gateway": each request increments a
per-model counter on an exporter the test runs (Prometheus scrapes it every second) and, when the
model is loaded, is sent to Triton. Reconcile reads ``increase(gateway_requests_total[10s])`` from
Prometheus once per run and places 30 on-demand models on a server with room for 8 of them (plus
one pinned model that nobody calls).

Footprints: every model is given the same predicted footprint (``_SameFootprint``, the
port reconcile uses when nothing is measured) and no memory probe, so "room for 8" is exact; the
budget itself is the server's ``memory_budget_bytes`` in tritonops.yaml.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from tests.conftest import Stack
from tests.promstack import Exporter, Prometheus
from tests.reconcile.conftest import Publisher, model_py
from tritonops.config import ServerConfig, load_config
from tritonops.demand.read import read_demand
from tritonops.demand.settings import DemandSettings, TritonSource
from tritonops.dev import stack
from tritonops.reconcile import runner
from tritonops.reconcile.adapters import ControlAdapter
from tritonops.store.s3 import s3_client

pytestmark = pytest.mark.slow
EU = "eu-west-1"
UNIT = 64 << 20  # every model's predicted footprint


class _SameFootprint:
    """Every model priced at UNIT (a FootprintPort), so the budget holds exactly 8 of them."""

    def predict(self, model: str, digest: str, size_bytes: int) -> int:
        return UNIT

    def prediction(self, model: str, digest: str, size_bytes: int) -> tuple[int, str]:
        return UNIT, "estimate"
SLOTS = 8  # on-demand models that fit
WINDOW_S = 10
ZIPF_S = 1.0
BATCH = 300  # requests per load-generator batch


@dataclass
class Region:
    server: stack.TritonServer
    publisher: Publisher
    region_data: dict[str, Any]
    tmp: Path


@pytest.fixture(scope="module")
def region(dev_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    """One fresh Triton on a unique prefix of the EU bucket (the test owns its state)."""
    tmp = tmp_path_factory.mktemp("demand-e2e")
    base = dev_stack.config.region(EU)
    rc = base.model_copy(update={"bucket": f"s3://{base.bucket_name}/dem-{uuid.uuid4().hex[:10]}", "servers": []})
    s3_client(rc).put_object(Bucket=rc.bucket_name, Key=f"{rc.prefix}/README", Body=b"demand test\n")
    t = stack.start_triton(
        dev_stack.triton_home, rc.triton_repository_url(), tmp / "triton.log", dev_stack.triton_env()
    )
    data = {"bucket": rc.bucket, "endpoint_url": base.endpoint_url, "profile": base.profile,
            "credentials_file": str(base.credentials_file)}  # fmt: skip
    try:
        yield Region(t, Publisher(rc), data, tmp)
    finally:
        stack.stop(t.record)


def _client(server: stack.TritonServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), concurrency=4)


def _inputs() -> list[httpclient.InferInput]:
    i = httpclient.InferInput("X", [1, 4], "FP32")
    i.set_data_from_numpy(np.ones((1, 4), np.float32))
    return [i]


def _infer(c: httpclient.InferenceServerClient, model: str) -> None:
    c.infer(model, _inputs())


def ready(server: stack.TritonServer) -> set[str]:
    return {r["name"] for r in _client(server).get_model_repository_index() if r.get("state") == "READY"}


def test_triton_statistics_source_counts_inferences_between_runs(region: Region) -> None:
    a, b = f"sa-{uuid.uuid4().hex[:6]}", f"sb-{uuid.uuid4().hex[:6]}"
    pub = Publisher(region.publisher.region)
    for m in (a, b):
        pub.publish(m, 1, {"model.py": model_py(1.0)})
    ctl = ControlAdapter(ServerConfig(name="eu-a", http_url=region.server.http_url), None, None)
    c = _client(region.server)
    try:
        for m in (a, b):
            ctl.client.load(m)
        for m, n in ((a, 3), (b, 5)):
            for _ in range(n):
                _infer(c, m)
        settings = DemandSettings(sources=[TritonSource()])
        state = region.tmp / "stats-state"
        first = read_demand(settings, EU, state, clients=[ctl])
        assert first.complete and {m: first.of(m) for m in (a, b)} == {a: 3.0, b: 5.0}
        assert first.last_inference_ms[a] > 0 and first.last_inference_ms[b] >= first.last_inference_ms[a]
        for _ in range(2):
            _infer(c, a)
        second = read_demand(settings, EU, state, clients=[ctl])  # counts since the last run
        assert {m: second.of(m) for m in (a, b)} == {a: 2.0, b: 0.0}
        # the server goes away: the source fails, and its last counts stand in for it
        down = ControlAdapter(ServerConfig(name="eu-a", http_url="http://127.0.0.1:9"), None, None)
        third = read_demand(settings, EU, state, clients=[down])
        assert third.complete and not third.sources[0].ok and third.of(a) == 2.0 and "eu-a" in third.errors[0]
    finally:
        for m in (a, b):
            ctl.client.unload(m, wait=True)


@dataclass
class Gateway:
    """Counts requests per model on the exporter (what Prometheus scrapes) and forwards them to Triton."""

    exporter: Exporter
    server: stack.TritonServer
    models: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    warm: int = 0
    cold: int = 0

    def publish_counts(self) -> None:
        lines = ["# TYPE gateway_requests_total counter"]
        lines += [f'gateway_requests_total{{model="{m}"}} {self.counts.get(m, 0)}' for m in self.models]
        with self.exporter.lock:
            self.exporter.text = "\n".join(lines) + "\n"

    def batch(self, order: list[str], seed: int) -> None:
        """``BATCH`` requests, Zipf over ``order`` (most popular first): exact quotas, shuffled."""
        w = 1.0 / np.arange(1, len(order) + 1) ** ZIPF_S
        quota = np.maximum(1, np.round(BATCH * w / w.sum())).astype(int)
        reqs = [m for m, q in zip(order, quota, strict=True) for _ in range(q)]
        np.random.default_rng(seed).shuffle(reqs)
        loaded = ready(self.server)
        c = _client(self.server)
        hits = [m for m in reqs if m in loaded]
        for r in [c.async_infer(m, _inputs()) for m in hits]:  # 4 in flight (the client's concurrency)
            r.get_result()
        self.warm += len(hits)
        self.cold += len(reqs) - len(hits)
        for m in reqs:
            self.counts[m] = self.counts.get(m, 0) + 1
        self.publish_counts()


def _wait_scraped(prom: Prometheus, gw: Gateway) -> None:
    """Until Prometheus holds the gateway's current totals (two scrapes, so ``increase`` sees the step)."""
    total = sum(gw.counts.values())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = prom.query("sum(gateway_requests_total)")
        if rows and float(rows[0]["value"][1]) >= total:  # type: ignore[index]
            time.sleep(1.2)
            return
        time.sleep(0.2)
    raise AssertionError("prometheus did not scrape the gateway's counters")


def _top(order: list[str]) -> set[str]:
    return set(order[:SLOTS])


def test_placement_follows_zipf_demand_from_prometheus(
    region: Region, dev_stack: Stack, prometheus: Prometheus, exporter: Exporter
) -> None:
    tag = uuid.uuid4().hex[:6]
    models = [f"z{i:02d}-{tag}" for i in range(30)]
    pin = f"pin-{tag}"
    for m in [*models, pin]:
        region.publisher.publish(m, 1, {"model.py": model_py(1.0)})
    query = f"sum by (model) (increase(gateway_requests_total[{WINDOW_S}s]))"
    cfg_path = region.tmp / "tritonops.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "repository": str(region.tmp / "repo"), "state_dir": str(region.tmp / "state"),
        "regions": {EU: {**region.region_data,
                         "servers": [{"name": "eu-a", "http_url": region.server.http_url,
                                      "memory_budget_bytes": (SLOTS + 1) * UNIT}],
                         "demand": {"window_s": WINDOW_S, "max_loads_per_run": 4,
                                    "sources": [{"kind": "prometheus", "url": prometheus.url, "query": query}]}}},
        "models": {pin: {"placement": "pinned"}},
    }, sort_keys=False))  # fmt: skip
    gw = Gateway(exporter, region.server, models)
    gw.publish_counts()  # every series at 0 first, so that increase() sees each model's first requests
    prometheus.wait_for("gateway_requests_total", len(models))
    history: list[dict[str, Any]] = []
    plans: list[Any] = []

    def run(seed: int, order: list[str] | None) -> tuple[set[str], list[tuple[str, str]]]:
        """One load-generator batch, then one reconcile: (on-demand models loaded after it, its actions)."""
        if order is not None:
            gw.batch(order, seed)
            _wait_scraped(prometheus, gw)
        ctx = runner.context(load_config(cfg_path), EU)
        ctx.interval_s = 5.0
        ctx.ports.footprint = _SameFootprint()  # the same footprint for all: room for exactly 8
        ctx.ports.memories = {k: None for k in ctx.ports.memories}
        for ctl in ctx.ports.controls.values():
            assert isinstance(ctl, ControlAdapter)
            ctl.probe = None  # no measuring: footprints stay what SizeGuess says
        report = runner.reconcile(ctx)
        assert report.failed == 0, report.to_json()["results"]
        doc = report.to_json()
        history.append(doc)
        assert doc["demand"]["complete"] and doc["demand"]["sources"][0]["ok"], doc["demand"]
        plans.append(report.plan)
        acts = [(r["kind"], r["model"]) for r in doc["results"]]
        return {m for m in ready(region.server) if m in models}, acts

    t0 = time.monotonic()
    order1 = list(np.random.default_rng(1).permutation(models))
    # Phase 1: from nothing, the top 8 within a few runs (4 loads per run), the pinned one at once.
    loaded: set[str] = set()
    for k in range(3):
        loaded, acts = run(10 + k, order1)
        assert pin in ready(region.server)
        if loaded == _top(order1):
            break
    assert loaded == _top(order1), (k, sorted(loaded), sorted(_top(order1)))
    first_runs = k + 1
    # steady: more requests of the same popularity change nothing
    _, acts = run(20, order1)
    assert acts == []
    # the journal names the demand source; every load says why, with the demand and cost behind it
    assert history[0]["demand"]["sources"][0]["source"].startswith("prometheus ")
    first = [a for a in plans[0].to_json()["actions"] if a["model"] != pin]
    assert len(first) == 4 and all(a["kind"] == "load" and a["figures"]["demand"] > 0 for a in first)
    assert {a["model"] for a in first} == set(order1[:4])  # the four most requested first

    # Phase 2: popularity reverses. Once the window holds only the new requests, placement follows
    # within two runs (8 swaps at 4 loads per run), and nothing swaps back and forth.
    order2 = list(reversed(order1))
    time.sleep(WINDOW_S + 2)  # the old requests leave the 10 s window
    seen: list[list[tuple[str, str]]] = []
    for k in range(2):
        loaded, acts = run(30 + k, order2)
        seen.append(acts)
        assert pin in ready(region.server)
    assert loaded == _top(order2), (sorted(loaded), sorted(_top(order2)))
    loaded_then = [m for acts in seen for kind, m in acts if kind == "load"]
    evicted_then = [m for acts in seen for kind, m in acts if kind == "evict"]
    assert sorted(loaded_then) == sorted(_top(order2)) and sorted(evicted_then) == sorted(_top(order1))
    assert not set(loaded_then) & set(evicted_then)  # no thrashing: nothing loaded and evicted in the shift
    _, acts = run(40, order2)
    assert acts == []
    assert pin in ready(region.server)
    shift = [a for p in plans[-3:] for a in p.to_json()["actions"]]
    ev = [a["figures"]["demand"] for a in shift if a["kind"] == "evict"]
    ld = [a["figures"]["demand"] for a in shift if a["kind"] == "load"]
    assert len(ev) == len(ld) == SLOTS and max(ev) < min(ld)  # each eviction made room for more demand
    assert all("cut line" in a["reason"] for a in shift if a["kind"] == "evict")
    print(f"\ndemand e2e: {first_runs} runs to fill, 2 to follow the shift; warm {gw.warm} cold {gw.cold}; "
          f"{time.monotonic() - t0:.0f} s")  # fmt: skip
