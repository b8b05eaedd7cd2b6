"""One placement for the region, end to end: three real Triton servers with room for 4 models each,
8 on-demand models with demand (a JSON source), the two hottest asking for more replicas than one
(``served_rps``). The region holds all 8 distinct models (not the same 4 on every server), the hottest
on several servers; a second run changes nothing; when a server goes down, its models are placed on
the other two at the next run, within their budgets.

Footprints: every model is priced at UNIT (the footprint port reconcile uses when nothing is
measured) and no memory probe, so "room for 4" is exact: the servers' ``memory_budget_bytes``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient
import yaml

from tests.conftest import Stack
from tests.reconcile.conftest import Publisher, model_py
from tritonops.config import load_config
from tritonops.dev import stack
from tritonops.reconcile import runner
from tritonops.reconcile.adapters import ControlAdapter
from tritonops.store.s3 import s3_client

pytestmark = pytest.mark.slow
EU = "eu-west-1"
UNIT = 64 << 20
ROOM = 4  # models per server
SERVERS = ("eu-a", "eu-b", "eu-c")
WINDOW_S = 60


class _SameFootprint:
    def predict(self, model: str, digest: str, size_bytes: int) -> int:
        return UNIT

    def prediction(self, model: str, digest: str, size_bytes: int) -> tuple[int, str]:
        return UNIT, "estimate"


@dataclass
class Region:
    servers: dict[str, stack.TritonServer]
    publisher: Publisher
    region_data: dict[str, Any]
    tmp: Path


@pytest.fixture(scope="module")
def region(dev_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    """Three fresh Tritons on a unique prefix of the EU bucket (the test owns its state)."""
    tmp = tmp_path_factory.mktemp("region-placement")
    base = dev_stack.config.region(EU)
    rc = base.model_copy(update={"bucket": f"s3://{base.bucket_name}/rp-{uuid.uuid4().hex[:10]}", "servers": []})
    s3_client(rc).put_object(Bucket=rc.bucket_name, Key=f"{rc.prefix}/README", Body=b"region placement test\n")
    servers: dict[str, stack.TritonServer] = {}
    data = {"bucket": rc.bucket, "endpoint_url": base.endpoint_url, "profile": base.profile,
            "credentials_file": str(base.credentials_file)}  # fmt: skip
    try:
        for name in SERVERS:
            servers[name] = stack.start_triton(
                dev_stack.triton_home, rc.triton_repository_url(), tmp / f"{name}.log", dev_stack.triton_env()
            )
        yield Region(servers, Publisher(rc), data, tmp)
    finally:
        for t in servers.values():
            stack.stop(t.record)


def ready(server: stack.TritonServer) -> set[str]:
    c = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    return {r["name"] for r in c.get_model_repository_index() if r.get("state") == "READY"}


def test_region_holds_distinct_models_replicates_the_hottest_and_survives_a_server(region: Region) -> None:
    tag = uuid.uuid4().hex[:6]
    models = [f"r{i}-{tag}" for i in range(8)]
    for m in models:
        region.publisher.publish(m, 1, {"model.py": model_py(1.0)})
    # 3000 requests a window at 20 requests/s per replica (1200 a window) want 3 replicas; 1500 want 2
    counts = dict(zip(models, [3000, 1500, 500, 400, 300, 200, 100, 50], strict=True))
    demand_file = region.tmp / f"demand-{tag}.json"
    demand_file.write_text(json.dumps({"models": counts}))
    cfg_path = region.tmp / f"tritonops-{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "repository": str(region.tmp / "repo"), "state_dir": str(region.tmp / f"state-{tag}"),
        "regions": {EU: {**region.region_data,
                         "servers": [{"name": n, "http_url": t.http_url, "memory_budget_bytes": ROOM * UNIT}
                                     for n, t in region.servers.items()],
                         "demand": {"window_s": WINDOW_S, "max_loads_per_run": 4,
                                    "sources": [{"kind": "json", "url": str(demand_file)}]}}},
        "models": {models[0]: {"served_rps": 20}, models[1]: {"served_rps": 20}},
    }, sort_keys=False))  # fmt: skip

    def run() -> runner.RunReport:
        ctx = runner.context(load_config(cfg_path), EU)
        ctx.ports.footprint = _SameFootprint()
        ctx.ports.memories = {k: None for k in ctx.ports.memories}
        for ctl in ctx.ports.controls.values():
            assert isinstance(ctl, ControlAdapter)
            ctl.probe = None
        report = runner.reconcile(ctx)
        assert report.failed == 0, report.to_json()["results"]
        return report

    def held(names: tuple[str, ...] = SERVERS) -> dict[str, set[str]]:
        return {n: ready(region.servers[n]) & set(models) for n in names}

    first = run()
    on = held()
    # room for 12, 8 distinct models, then replicas by demand: 3 of the hottest, 2 of the next
    assert set().union(*on.values()) == set(models), on
    assert sum(models[0] in s for s in on.values()) == 3 and sum(models[1] in s for s in on.values()) == 2
    assert all(len(s) <= ROOM for s in on.values()), on
    placement = first.plan.to_json()["placement"]
    assert set(placement["models"][models[0]]["servers"]) == set(SERVERS)
    assert placement["models"][models[0]]["wanted"] == 3 and placement["distinct_models"] == 8
    assert "replica" in placement["models"][models[0]]["servers"]["eu-a"]["reason"]

    # nothing changed: nothing to do
    again = run()
    assert again.plan.actions == [] and held() == on

    # a server goes down: its models go to the others at the next run, within their budgets
    down = "eu-c"
    stack.stop(region.servers[down].record)
    lost = run()
    assert down in lost.skipped_servers
    rest = held(tuple(n for n in SERVERS if n != down))
    assert set().union(*rest.values()) == set(models), rest  # 8 slots left: every model keeps one replica
    assert all(len(s) <= ROOM for s in rest.values()), rest
    assert not [a for a in lost.plan.actions if a.server == down]
