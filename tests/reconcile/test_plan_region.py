"""The plan follows the region's placement (synthetic state): distinct models over the servers,
replicas by demand, a skipped server's models placed on the others, the placement in the plan's JSON."""

from __future__ import annotations

import json

from tests.reconcile.synthetic import MB, actual, desired
from tritonops.placement import PlacementPolicy
from tritonops.reconcile.plan import Plan, make_plan
from tritonops.reconcile.state import DemandInput, DesiredState

REPORT = {"window_s": 900.0, "complete": True, "sources": [{"source": "json demand.json", "ok": True}]}


def with_demand(d: DesiredState, counts: dict[str, float], **kw: object) -> DesiredState:
    d.demand = DemandInput(counts, True, PlacementPolicy(60.0, 0.25, 4), dict(REPORT), **kw)  # type: ignore[arg-type]
    return d


def od(n: int) -> dict[str, tuple[int, str, int]]:
    return {f"m{i}": (1, "on-demand", 10 * MB) for i in range(n)}


def loads(p: Plan) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a in p.actions:
        if a.kind.value == "load":
            out.setdefault(a.server, set()).add(a.model)
    return out


def test_servers_hold_distinct_models_not_the_same_top_ones() -> None:
    counts = {f"m{i}": 600 - 100 * i for i in range(6)}
    d = with_demand(desired(od(6), {"s1": None, "s2": None}, budget=30 * MB), counts)
    p = make_plan(d, actual({"s1": {}, "s2": {}}))
    got = loads(p)
    assert set().union(*got.values()) == set(counts) and all(len(v) == 3 for v in got.values())
    doc = p.to_json()
    assert doc["placement"]["distinct_models"] == 6 and len(doc["placement"]["models"]["m0"]["servers"]) == 1
    assert Plan.from_json(json.loads(json.dumps(doc))).digest == p.digest


def test_hot_model_replicated_on_distinct_servers_and_rerun_is_a_no_op() -> None:
    counts = {"m0": 5000, "m1": 10, "m2": 5}
    served = {"m0": (2000.0, "config")}
    d = with_demand(desired(od(3), {"s1": None, "s2": None, "s3": None}, budget=20 * MB), counts, served=served)
    p = make_plan(d, actual({"s1": {}, "s2": {}, "s3": {}}))
    got = loads(p)
    assert sum("m0" in v for v in got.values()) == 3 and sum(len(v) for v in got.values()) == 5
    after = {s: {m: ([1], 10 * MB, 0) for m in v} for s, v in got.items()}
    assert make_plan(d, actual(after)).actions == []


def test_a_skipped_server_s_models_go_to_the_others() -> None:
    counts = {f"m{i}": 100 - i for i in range(4)}
    d = with_demand(desired(od(4), {"s1": None, "s2": None}, budget=20 * MB), counts)
    held = {"s1": {"m0": ([1], 10 * MB, 0), "m2": ([1], 10 * MB, 0)}, "s2": {"m1": ([1], 10 * MB, 0)}}
    a = actual(held)
    a.servers["s1"].reachable = False
    p = make_plan(d, a)
    assert loads(p) == {"s2": {"m0"}} and not [x for x in p.actions if x.server == "s1"]
    assert [n.server for n in p.notes if n.kind == "server-skipped"] == ["s1"]
