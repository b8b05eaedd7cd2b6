"""Parallel apply on real Tritons: measured once per fleet, then loaded several at a time; a plan made
from estimates is re-planned after each measurement so the server never ends over its budget."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.memory.models import ALLOC_MODEL_PY, alloc_config
from tests.reconcile.conftest import model_py
from tests.reconcile.test_e2e import EU, ready
from tritonops.config import load_config
from tritonops.dev import stack
from tritonops.memory.fleet import PREFIX
from tritonops.memory.ledger import estimate_bytes
from tritonops.reconcile import runner
from tritonops.store import open_store

pytestmark = pytest.mark.slow
MIB = 1 << 20


_LOG_TIME = re.compile(r"^[IWE]\d{4} (\d\d):(\d\d):(\d\d\.\d+) .*\"(loading: ([^:\"]+):\d+|successfully loaded '([^']+)')\"")


def peak_loads(log_path: str | Path) -> int:
    """The most model loads Triton ran at once, from its own log ("loading: m:v" until
    "successfully loaded 'm'"): what the server saw, not what the client meant to send."""
    now = peak = 0
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        now += 1 if m.group(5) else -1
        peak = max(peak, now)
    return peak


def first_loaded(log_path: str | Path) -> str:
    """The first model Triton started loading, from its log."""
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if m and m.group(5):
            return m.group(5)
    return ""


def test_measured_on_one_host_then_loaded_in_parallel_on_another(
    rec_regions, unique, dev_stack, tmp_path: Path
) -> None:
    models = sorted(unique("par") for _ in range(6))
    rr = rec_regions({})
    for i, m in enumerate(models):
        rr.publishers[EU].publish(m, 1, {"model.py": model_py(float(i))})

    # Host 1, first run: every footprint unknown. On the host probe a python model is measured from its
    # own stub process, so after the first measurement the rest load several at a time.
    rep = runner.reconcile(runner.context(load_config(rr.config_path), EU))
    assert sorted((r.action.model, r.result, r.measured) for r in rep.results) == [(m, "ok", True) for m in models]
    assert 2 <= peak_loads(rr.servers[EU].record.log) <= 4  # Triton's 4 load threads (the default)
    # each measurement is the stub's own memory: a python stub with numpy, tens of MiB, alike for all six
    sizes = [r.action.predicted_bytes + (r.prediction_error_bytes or 0) for r in rep.results]
    assert all(20 * MIB < b < 150 * MIB for b in sizes) and max(sizes) - min(sizes) < 8 * MIB, sizes
    store = open_store(rr.config.region(EU), EU)
    assert len(store.list(PREFIX)) == 6  # the measurements went to the region's bucket

    # Host 2: its own state dir (nothing local), a fresh Triton of the same region.
    t = stack.start_triton(
        dev_stack.triton_home, rr.servers[EU].repository_url, tmp_path / "host2.log", dev_stack.triton_env()
    )
    try:
        data = yaml.safe_load(rr.config_path.read_text())
        data["state_dir"] = str(tmp_path / "state-host2")
        data["regions"][EU]["servers"] = [
            {"name": "b", "http_url": t.http_url, "metrics_url": t.metrics_url, "load_threads": 3}
        ]
        cfg2 = tmp_path / "host2.yaml"
        cfg2.write_text(yaml.safe_dump(data, sort_keys=False))
        rep2 = runner.reconcile(runner.context(load_config(cfg2), EU))
        # in placement's order (by priority: measured footprints differ a little), every one ok
        assert sorted((r.action.model, r.result) for r in rep2.results) == [(m, "ok") for m in models]
        assert [r.measured for r in rep2.results] == [False] * 6  # placed from host 1's measurements
        # several at a time, never more than the server's configured load threads, as Triton saw them
        assert 2 <= peak_loads(t.record.log) <= 3
        assert ready(t) == {m: [1] for m in models}
        assert len(store.list(PREFIX)) == 6  # nothing measured again
    finally:
        stack.stop(t.record)


def test_replanned_after_each_measurement_never_over_budget(rec_regions, unique) -> None:
    """Issue 13's soak finding: 6 python models of about 77 MiB measured, a budget that fits 3, size
    estimates (64 MiB each) smaller than reality: the plan fits 4 of them, apply must stop at 3."""
    models = sorted(unique("big") for _ in range(6))
    rr = rec_regions({})
    budget = 273_000_000
    rr.rewrite(lambda d: d["regions"][EU]["servers"][0].update(memory_budget_bytes=budget))
    for m in models:
        rr.publishers[EU].publish(m, 1, {"model.py": ALLOC_MODEL_PY.encode()}, config_text=alloc_config(32))

    ctx = runner.context(rr.config, EU)
    plan = runner.make_region_plan(ctx)
    assert sum(a.kind == "load" for a in plan.actions) * 64 * MIB <= budget  # the plan trusts its estimates
    rep = runner.reconcile(ctx)
    ok = [r for r in rep.results if r.result == "ok"]
    deferred = [r for r in rep.results if r.result == "deferred"]
    assert ok and deferred and not [r for r in rep.results if r.result in ("failed", "skipped")]
    measured = [r.action.predicted_bytes + (r.prediction_error_bytes or 0) for r in ok]
    # each model really costs more than the 64 MiB estimate (stub + 32 MiB allocated)
    assert all(66 * MIB < b < 130 * MIB for b in measured), [b / MIB for b in measured]
    assert sum(measured) <= budget, [b / MIB for b in measured]
    # and the room was used: no further model of that size would have fitted
    assert budget - sum(measured) < min(measured), [b / MIB for b in measured]
    assert rep.failed == 0 and "deferred to the next run" in deferred[0].error
    assert sorted(ready(rr.servers[EU])) == sorted(r.action.model for r in ok)

    # The next run plans from the measurements: nothing loads that would not fit.
    again = runner.reconcile(runner.context(rr.config, EU))
    assert [r for r in again.results if r.result == "ok"] == []
    assert any(n.kind == "deferred" for n in again.plan.notes)

    # Room for one more estimate (64 MiB + twice the size) but not for a real one: a model still unmeasured (deferred
    # above) is loaded, measured, and unloaded again, so the run still ends within the budget.
    # The room is the estimate plus 1 MiB: a real one (stub + 32 MiB allocated, over 66 MiB) never fits.
    room = estimate_bytes(len(ALLOC_MODEL_PY.encode())) + MIB
    rr.rewrite(lambda d: d["regions"][EU]["servers"][0].update(memory_budget_bytes=sum(measured) + room))
    third = runner.reconcile(runner.context(rr.config, EU))
    assert [(r.result, "unloaded again" in r.error) for r in third.results] == [("deferred", True)]
    assert third.failed == 0
    assert sorted(ready(rr.servers[EU])) == sorted(x.action.model for x in ok)


def test_two_servers_measure_different_models_first(rec_regions, unique, dev_stack, tmp_path: Path) -> None:
    """Two servers of a region, nothing measured yet: each starts its loads at a different point of the
    list, so most models are measured on one server and loaded on the other from that measurement."""
    models = sorted(unique("two") for _ in range(6))
    rr = rec_regions({})
    for i, m in enumerate(models):
        rr.publishers[EU].publish(m, 1, {"model.py": model_py(float(i))})
    t = stack.start_triton(
        dev_stack.triton_home, rr.servers[EU].repository_url, tmp_path / "second.log", dev_stack.triton_env()
    )
    try:
        data = yaml.safe_load(rr.config_path.read_text())
        first = data["regions"][EU]["servers"][0]
        first["load_threads"] = 1  # one load at a time per server: the order is what is tested
        data["regions"][EU]["servers"].append(
            {"name": "second", "http_url": t.http_url, "metrics_url": t.metrics_url, "load_threads": 1}
        )
        cfg = tmp_path / "two.yaml"
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        rep = runner.reconcile(runner.context(load_config(cfg), EU))
        assert sorted((r.action.server, r.action.model, r.result) for r in rep.results) == sorted(
            (s, m, "ok") for s in (first["name"], "second") for m in models
        )
        # what each Triton loaded first, from its own log: the second server starts half-way down the list
        assert [first_loaded(x.record.log) for x in (rr.servers[EU], t)] == [models[0], models[3]]
        # Each model measured about once (12 loads; both servers in the plan's order measured all 12).
        measured = sum(r.measured for r in rep.results)
        assert 6 <= measured <= 8, [(r.action.server, r.action.model, r.measured) for r in rep.results]
        assert ready(t) == {m: [1] for m in models} and ready(rr.servers[EU]) == {m: [1] for m in models}
    finally:
        stack.stop(t.record)
