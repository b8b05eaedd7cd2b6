"""The planner on synthetic state: deterministic, idempotent, memory-aware, guarded."""

from __future__ import annotations

import json

import pytest

from tests.reconcile.synthetic import MB, actual, desired
from tritonops.errors import PlanError
from tritonops.reconcile.plan import AVAILABILITY, RESOURCE, Plan, make_plan
from tritonops.reconcile.state import ServerActual


def kinds(plan: Plan) -> list[tuple[str, str, str, int | None]]:
    return [(a.kind, a.server, a.model, a.version) for a in plan.actions]


def test_loads_missing_models_and_nothing_for_models_at_desired_state() -> None:
    d = desired({"a": (1, "on-demand", 10 * MB), "b": (2, "pinned", 10 * MB)}, {"s1": None})
    p = make_plan(d, actual({"s1": {"a": ([1], 10 * MB, 5)}}))
    assert kinds(p) == [("load", "s1", "b", 2)]
    assert p.actions[0].reason


def test_second_plan_after_converging_is_empty() -> None:
    d = desired({"a": (1, "on-demand", MB), "b": (2, "pinned", MB)}, {"s1": None, "s2": ["a"]})
    p = make_plan(d, actual({"s1": {"a": ([1], MB, 0), "b": ([2], MB, 0)}, "s2": {"a": ([1], MB, 0)}}))
    assert p.actions == [] and not p.has_changes


def test_same_inputs_same_plan_and_digest_whatever_the_input_order() -> None:
    models = {f"m{i}": (1, "on-demand", MB) for i in range(20)}
    p1 = make_plan(desired(models, {"s1": None, "s2": None}), actual({"s1": {}, "s2": {}}))
    rev = dict(reversed(list(models.items())))
    p2 = make_plan(desired(rev, {"s2": None, "s1": None}), actual({"s2": {}, "s1": {}}))
    assert p1.digest == p2.digest
    assert p1.to_json() == p2.to_json()
    assert len(p1.actions) == 40


def test_unloads_only_owned_models_that_are_no_longer_desired() -> None:
    # "gone" was published earlier (owned via the journal); "theirs" was never ours and is absent from state.
    d = desired({"a": (1, "on-demand", MB)}, {"s1": None})
    a = actual({"s1": {"a": ([1], MB, 0), "gone": ([3], MB, 0)}})
    p = make_plan(d, a)
    assert kinds(p) == [("unload", "s1", "gone", 3)]
    assert "no longer published" in p.actions[0].reason


def test_new_version_with_room_is_availability_preserving() -> None:
    d = desired({"a": (2, "on-demand", 10 * MB)}, {"s1": None}, budget=100 * MB)
    p = make_plan(d, actual({"s1": {"a": ([1], 10 * MB, 0)}}))
    assert kinds(p) == [("reload", "s1", "a", 2)]
    assert p.actions[0].strategy == AVAILABILITY
    assert p.actions[0].from_versions == (1,)


def test_new_version_without_room_for_both_is_resource_preserving() -> None:
    d = desired({"a": (2, "on-demand", 60 * MB)}, {"s1": None}, budget=100 * MB)
    p = make_plan(d, actual({"s1": {"a": ([1], 60 * MB, 0)}}))
    assert [(a.kind, a.strategy) for a in p.actions] == [("reload", RESOURCE)]
    assert p.actions[0].memory_free_after == (("budget", 40 * MB),)


def test_over_budget_evicts_least_recently_used_on_demand_never_pinned() -> None:
    models = {
        "pin": (1, "pinned", 40 * MB),
        "old": (1, "on-demand", 40 * MB),
        "new": (1, "on-demand", 40 * MB),
    }
    d = desired(models, {"s1": None}, budget=100 * MB)
    a = actual({"s1": {"pin": ([1], 40 * MB, 1), "old": ([1], 40 * MB, 1000), "new": ([1], 40 * MB, 2000)}})
    p = make_plan(d, a)
    assert kinds(p) == [("evict", "s1", "old", 1)]
    # the evicted model waits for room; it is not loaded back in the same plan
    assert any(n.kind == "deferred" and n.model == "old" for n in p.notes)


def test_pinned_model_evicts_lru_on_demand_to_fit() -> None:
    models = {"pin": (1, "pinned", 50 * MB), "x": (1, "on-demand", 40 * MB), "y": (1, "on-demand", 40 * MB)}
    d = desired(models, {"s1": None}, budget=100 * MB)
    p = make_plan(d, actual({"s1": {"x": ([1], 40 * MB, 500), "y": ([1], 40 * MB, 100)}}))
    assert kinds(p) == [("evict", "s1", "y", 1), ("load", "s1", "pin", 1)]
    assert p.actions[1].memory_free_after == (("budget", 10 * MB),)


def test_pinned_model_that_cannot_fit_is_reported_and_nothing_evicted() -> None:
    models = {"huge": (1, "pinned", 500 * MB), "x": (1, "on-demand", 40 * MB)}
    d = desired(models, {"s1": None}, budget=100 * MB)
    p = make_plan(d, actual({"s1": {"x": ([1], 40 * MB, 0)}}))
    assert p.actions == []
    assert [(n.kind, n.model) for n in p.notes] == [("unfit", "huge")]


def test_on_demand_models_never_evict_each_other() -> None:
    models = {"x": (1, "on-demand", 60 * MB), "y": (1, "on-demand", 60 * MB)}
    p = make_plan(desired(models, {"s1": None}, budget=100 * MB), actual({"s1": {"x": ([1], 60 * MB, 0)}}))
    assert p.actions == [] and [n.kind for n in p.notes] == ["deferred"]


def test_measured_free_memory_and_headroom_are_used_without_a_budget() -> None:
    d = desired(
        {"a": (1, "on-demand", 30 * MB), "b": (1, "on-demand", 30 * MB)}, {"s1": None}, headroom=20 * MB
    )
    p = make_plan(d, actual({"s1": {}}, free=70 * MB))
    assert kinds(p) == [("load", "s1", "a", 1)]
    assert p.actions[0].memory_free_after == (("gpu0", 20 * MB),)


def test_quarantined_version_is_not_planned_and_reported() -> None:
    d = desired({"a": (3, "on-demand", MB)}, {"s1": None})
    p = make_plan(d, actual({"s1": {"a": ([2], MB, 0)}}, quarantined={("s1", "a", "d-a-3")}))
    assert p.actions == [] and [n.kind for n in p.notes] == ["quarantined"]


def test_unreachable_server_is_skipped_and_reported() -> None:
    d = desired({"a": (1, "on-demand", MB)}, {"s1": None, "s2": None})
    a = actual({"s1": {}})
    a.servers["s2"] = ServerActual("s2", False, "server 's2': connection refused")
    p = make_plan(d, a)
    assert kinds(p) == [("load", "s1", "a", 1)]
    assert [(n.kind, n.server) for n in p.notes] == [("server-skipped", "s2")]


def test_guard_refuses_unloading_everything_without_force() -> None:
    d = desired({}, {"s1": None}, published=set())
    p = make_plan(d, actual({"s1": {"a": ([1], MB, 0), "b": ([1], MB, 0)}}))
    assert len(p.actions) == 2
    with pytest.raises(PlanError, match="unloads all 2 models.*--force"):
        p.raise_if_unsafe()
    p.raise_if_unsafe(force=True)


def test_guard_refuses_more_than_half_of_many() -> None:
    models = {f"m{i}": (1, "on-demand", MB) for i in range(6)}
    d = desired({k: v for k, v in models.items() if k in ("m0", "m1")}, {"s1": None}, published={"m0", "m1"})
    p = make_plan(d, actual({"s1": {m: ([1], MB, 0) for m in models}}))
    with pytest.raises(PlanError, match="unloads 4 of 6"):
        p.raise_if_unsafe()


def test_json_round_trip_keeps_the_digest_and_detects_edits() -> None:
    d = desired({"a": (2, "pinned", MB), "b": (1, "on-demand", MB)}, {"s1": None}, budget=10 * MB)
    p = make_plan(d, actual({"s1": {"a": ([1], MB, 0)}}))
    doc = json.loads(json.dumps(p.to_json()))
    assert doc["format_version"] == 1
    assert {"kind", "server", "model", "version", "reason"} <= set(doc["actions"][0])
    assert Plan.from_json(doc).digest == p.digest
    doc["actions"][0]["version"] = 7
    with pytest.raises(PlanError, match="digest does not match"):
        Plan.from_json(doc, "plan.json")


def test_model_with_unreadable_manifest_is_kept_as_loaded_not_unloaded() -> None:
    d = desired({"a": (1, "on-demand", MB)}, {"s1": None}, published={"a", "broken"})
    d.held = {"broken"}
    p = make_plan(d, actual({"s1": {"a": ([1], MB, 0), "broken": ([4], MB, 0)}}))
    assert p.actions == []
    assert [(n.kind, n.model) for n in p.notes] == [("held", "broken")]
