"""The planner's place step with demand (synthetic state): by demand and cost, capped, with hysteresis."""

from __future__ import annotations

import json

from tests.reconcile.synthetic import MB, actual, desired
from tritonops.placement import PlacementPolicy
from tritonops.reconcile.plan import FIGURE_KEYS, ActionKind, Plan, make_plan
from tritonops.reconcile.state import DemandInput, DesiredState

REPORT = {"window_s": 900.0, "complete": True, "sources": [{"source": "json demand.json", "ok": True}]}


def with_demand(
    d: DesiredState,
    counts: dict[str, float],
    complete: bool = True,
    max_loads: int | None = 4,
    hysteresis: float = 0.25,
) -> DesiredState:
    d.demand = DemandInput(
        counts, complete, PlacementPolicy(60.0, hysteresis, max_loads), dict(REPORT, complete=complete)
    )
    return d


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(a.kind.value, a.model) for a in plan.actions]


def od(n: int, size: int = 10 * MB) -> dict[str, tuple[int, str, int]]:
    return {f"m{i:02d}": (1, "on-demand", size) for i in range(n)}


def test_loads_the_most_requested_that_fit_with_their_figures() -> None:
    counts = {"m00": 1, "m01": 50, "m02": 0, "m03": 30, "m04": 40, "m05": 2}
    d = with_demand(desired(od(6), {"s1": None}, budget=30 * MB), counts)
    p = make_plan(d, actual({"s1": {}}))
    assert sorted(kinds(p)) == [("load", "m01"), ("load", "m03"), ("load", "m04")]
    # highest priority first: the order memory was simulated in
    assert [a.model for a in sorted(p.actions, key=lambda a: a.seq)] == ["m01", "m04", "m03"]
    a = p.actions[0]
    assert a.kind is ActionKind.load and set(dict(a.figures)) == set(FIGURE_KEYS)
    assert dict(a.figures)["demand"] == counts[a.model] and dict(a.figures)["footprint_bytes"] == 10 * MB
    assert "priority" in a.reason
    doc = p.to_json()
    assert doc["demand"]["sources"] == REPORT["sources"] and doc["actions"][0]["figures"]["load_source"] == "estimate"
    # the rest wait, each with the figures behind it in the note
    waiting = {n.model: n.message for n in p.notes if n.kind == "waiting"}  # not drift: demand leaves them out
    assert set(waiting) == {"m00", "m02", "m05"} and "no demand" in waiting["m02"] and "cut line" in waiting["m05"]
    assert not [n for n in p.notes if n.kind == "deferred"]
    assert Plan.from_json(json.loads(json.dumps(doc))).digest == p.digest


def test_cap_on_loads_per_run_defers_the_rest() -> None:
    d = with_demand(desired(od(6), {"s1": None}, budget=100 * MB), {f"m{i:02d}": 10 + i for i in range(6)}, max_loads=2)
    p = make_plan(d, actual({"s1": {}}))
    assert sorted(kinds(p)) == [("load", "m04"), ("load", "m05")]
    deferred = [n for n in p.notes if n.kind == "deferred"]
    assert len(deferred) == 4 and all("cap of 2 loads" in n.message for n in deferred)


def test_hysteresis_keeps_a_loaded_model_against_a_slightly_more_requested_one() -> None:
    d = with_demand(desired(od(2), {"s1": None}, budget=10 * MB), {"m00": 100, "m01": 110})
    a = actual({"s1": {"m00": ([1], 10 * MB, 0)}})
    assert make_plan(d, a).actions == []
    d = with_demand(desired(od(2), {"s1": None}, budget=10 * MB), {"m00": 100, "m01": 200})
    p = make_plan(d, a)
    assert kinds(p) == [("evict", "m00"), ("load", "m01")]
    ev = p.actions[0]
    assert dict(ev.figures)["demand"] == 100 and "cut line" in ev.reason


def test_pinned_models_stay_and_load_outside_the_cap() -> None:
    models = {**od(3), "pin": (1, "pinned", 10 * MB), "pin2": (1, "pinned", 10 * MB)}
    d = with_demand(desired(models, {"s1": None}, budget=30 * MB), {"m00": 5, "m01": 9, "m02": 7}, max_loads=1)
    p = make_plan(d, actual({"s1": {"pin": ([1], 10 * MB, 0)}}))
    # pin (no demand) kept, pin2 loaded although the cap is 1, then one on-demand load (the cap)
    assert kinds(p) == [("load", "pin2"), ("load", "m01")]


def test_incomplete_demand_never_evicts_on_demand() -> None:
    d = with_demand(desired(od(2), {"s1": None}, budget=10 * MB), {"m01": 500}, complete=False)
    p = make_plan(d, actual({"s1": {"m00": ([1], 10 * MB, 0)}}))
    assert p.actions == [] and [n.model for n in p.notes if n.kind == "waiting"] == ["m01"]
    assert "demand incomplete" in p.notes[0].message
    assert p.to_json()["demand"]["complete"] is False


def test_over_budget_evicts_the_lowest_demand_not_the_least_recently_used() -> None:
    d = with_demand(desired(od(3), {"s1": None}, budget=20 * MB), {"m00": 1, "m01": 100, "m02": 50})
    # m01 is the least recently used, but the most requested
    a = actual({"s1": {"m00": ([1], 10 * MB, 9000), "m01": ([1], 10 * MB, 1), "m02": ([1], 10 * MB, 5000)}})
    p = make_plan(d, a)
    assert kinds(p) == [("evict", "m00")]
    assert "lowest demand priority" in p.actions[0].reason and dict(p.actions[0].figures)["demand"] == 1


def test_new_version_of_a_kept_model_is_reloaded() -> None:
    d = with_demand(desired({"m00": (2, "on-demand", 10 * MB)}, {"s1": None}, budget=30 * MB), {"m00": 3})
    p = make_plan(d, actual({"s1": {"m00": ([1], 10 * MB, 0)}}))
    assert [(a.kind.value, a.strategy.value) for a in p.actions] == [("reload", "availability-preserving")]
