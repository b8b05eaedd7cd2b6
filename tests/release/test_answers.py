"""The answers gate on real Triton servers: a version that answers wrong (shifted outputs, NaN for part of
the inputs, another output shape) is stopped at its canary with no live traffic at all, and never reaches
another server; a version whose answers equal the live one's within tolerance passes it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from tests.release.conftest import EU, US, RelStack
from tritonops.cli.reconcile import reconcile_region
from tritonops.release import controller
from tritonops.release.answers import Tolerance, compare, inputs_for, tolerance_for, worst_of
from tritonops.release.ops import served_versions

ANS = "relans"
EU0, EU1, US0 = f"{EU}-triton-0", f"{EU}-triton-1", f"{US}-triton-0"


def serving(rel: RelStack) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in (EU, US):
        for s, d in served_versions(rel.config, r, [ANS]).items():
            out[s] = d["models"].get(ANS, [])
    return out


def reconcile(rel: RelStack) -> None:
    from tritonops.reconcile.runner import context, reconcile

    for r in (EU, US):
        reconcile(context(rel.config, r))


def advance_until(rel: RelStack, phases: tuple[str, ...], timeout_s: float = 240) -> tuple[dict[str, Any], list[Any]]:
    seen = []
    deadline = time.monotonic() + timeout_s
    while True:
        ro, _ = controller.advance(rel.config, ANS, reconcile_region)
        assert ro is not None
        seen.append(serving(rel))
        if ro["phase"] in phases:
            return ro, seen
        assert time.monotonic() < deadline, f"rollout stuck: {ro['phase']} {ro.get('gate')}"
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wrong_answers_are_stopped_at_the_canary_and_right_ones_pass(rel: RelStack) -> None:
    rel.add(1, model=ANS)
    reconcile(rel)
    assert serving(rel) == {EU0: [1], EU1: [1], US0: [1]}

    bad = {
        2: ("np.asarray(x) * 2.5", "values beyond atol"),  # a shifted scale
        3: ("np.where(x > 0.5, np.nan, x * 2.0)", "NaN or Inf where the live version's are finite"),
        4: ("np.concatenate([x, x], axis=1) * 2.0", "shape [8, 2] != live [8, 1]"),
    }
    for v, (answer, why) in bad.items():
        rel.add(v, model=ANS, answer=answer)
        controller.start(rel.config, ANS, v)
        t0 = time.monotonic()
        ro, seen = advance_until(rel, controller.TERMINAL)
        assert ro["phase"] == "failed", ro
        assert ro["step"] == 0 and ro["steps"][0]["kind"] == "canary"  # stopped at its canary
        assert "answers: server " + EU0 in ro["failure"] and "output 'Y'" in ro["failure"], ro["failure"]
        assert why in ro["failure"], ro["failure"]
        assert ro["answers"]["worst"] == "Y"
        assert all(s[EU1] == [1] and s[US0] == [1] for s in seen), f"v{v} went beyond its canary: {seen}"
        assert seen[-1] == {EU0: [1], EU1: [1], US0: [1]}
        print(f"v{v} ({why}): stopped in {time.monotonic() - t0:.1f} s")

    # A version whose answers differ by less than the tolerance passes the gate: its rollout bakes (and,
    # with no traffic, waits there for the metric gates), it is not stopped.
    rel.add(5, model=ANS, answer="x * 2.0 + 1e-7")
    controller.start(rel.config, ANS, 5)
    ro, _ = advance_until(rel, ("bake", *controller.TERMINAL))
    assert ro["phase"] == "bake" and ro["answers"]["verdict"] == "pass", ro
    assert "within tolerance" in " ".join(ro["answers"]["reasons"])
    controller.abort(rel.config, ANS, reconcile_region)
    assert serving(rel)[EU1] == [1]


def test_compare_names_the_worst_output_and_each_kind_of_difference() -> None:
    live = {"a": np.array([[1.0, 2.0]], np.float32), "b": np.array([[0.5, np.inf]], np.float32),
            "c": np.array([1, 2, 3], np.int64)}  # fmt: skip
    assert all(c.ok for c in compare(live, {k: v.copy() for k, v in live.items()}, Tolerance()))
    shifted = {**live, "a": live["a"] * 1.01}
    w = worst_of(compare(live, shifted, Tolerance()))
    assert w is not None and w.name == "a" and not w.ok and "2 of 2 values beyond" in w.reason
    assert worst_of(compare(live, shifted, Tolerance(rtol=0.02))).ok  # type: ignore[union-attr]
    nan = {**live, "b": np.array([[np.nan, np.inf]], np.float32)}
    w = worst_of(compare(live, nan, Tolerance()))
    assert w is not None and w.name == "b" and "1 of 2 values NaN or Inf" in w.reason
    w = worst_of(compare(live, {**live, "c": np.array([1, 2, 4])}, Tolerance()))
    assert w is not None and w.name == "c" and "1 of 3 values differ" in w.reason
    w = worst_of(compare(live, {**live, "a": live["a"].astype(np.float64)}, Tolerance()))
    assert w is not None and "dtype float64 != live float32" in w.reason
    w = worst_of(compare(live, {k: v for k, v in live.items() if k != "c"}, Tolerance()))
    assert w is not None and w.name == "c" and "missing" in w.reason


def test_inputs_and_tolerance_come_from_the_version(tmp_path: Any) -> None:
    cfg = {"max_batch_size": 8, "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": ["-1", "3"]}]}
    gen, src = inputs_for(cfg)
    assert gen[0][0] == "X" and gen[0][1] == "FP32" and gen[0][2].shape == (8, 2, 3) and gen[0][2].all()
    x = gen[0][2].ravel()
    assert (x < 0.3).any() and (x > 0.7).any()  # the whole range is sampled
    assert "generated" in src and np.array_equal(inputs_for(cfg)[0][0][2], gen[0][2])  # seeded: the same
    warm = {**cfg, "model_warmup": [{"name": "w", "batch_size": 4, "inputs": {"X": {"data_type": "TYPE_FP32",
            "dims": ["5", "3"], "random_data": True}}}]}  # fmt: skip
    got, src = inputs_for(warm)
    assert got[0][2].shape == (4, 5, 3) and "model_warmup 'w'" in src
    np.savez(tmp_path / "in.npz", X=np.ones((1, 7, 3), np.float32))
    got, src = inputs_for(cfg, tmp_path / "in.npz")
    assert got[0][2].shape == (1, 7, 3) and src.endswith("in.npz")
    tol = tolerance_for({"tolerance": {"y": {"max_abs": 0.01, "p99_rel": 0.1}}}, None, None)
    assert tol.get("y") == Tolerance(0.01, 0.0) and tol.get("other") == Tolerance()
    assert tolerance_for({}, 0.5, 0.25).get("y") == Tolerance(0.5, 0.25)
