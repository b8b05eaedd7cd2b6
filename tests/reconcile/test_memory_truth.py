"""Memory accounting that stays true, on the real stack (real Triton, host memory probe, ledger).

Each test reproduces one bug that existed before (see its docstring).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.reconcile.conftest import RecRegions, model_py
from tests.reconcile.test_e2e import cli, counting_context, ready
from tests.reconcile.test_faults import kill_server, replace_server
from tritonops.dev import stack
from tritonops.memory.ledger import FootprintKey, FootprintLedger, estimate_bytes
from tritonops.reconcile import runner
from tritonops.reconcile.ports import SizeGuess
from tritonops.reconcile.records import Owned

EU = "eu-west-1"
SERVER = f"{EU}-a"


def ledger(rr: RecRegions) -> dict[str, Any]:
    return json.loads((Path(rr.data["state_dir"]) / "footprints.json").read_text())


def footprints_of(rr: RecRegions, model: str) -> dict[int, int]:
    return {e["version"]: e["footprint_bytes"] for e in ledger(rr)["footprints"].values() if e["model"] == model}


def holdings(rr: RecRegions, model: str) -> list[str]:
    return sorted(ledger(rr)["servers"].get(SERVER, {}).get(model, {}))


@pytest.mark.slow
def test_a_version_loaded_beside_the_old_one_is_measured(rec_regions, unique) -> None:
    """Before: the availability-preserving switch recorded footprint 0 and nothing reached the ledger."""
    m = unique("switch")
    rr = rec_regions({})
    rr.publishers[EU].publish(m, 1, {"model.py": model_py(1.0)})
    assert cli(rr, "reconcile", "--region", EU).exit_code == 0
    rr.publishers[EU].publish(m, 2, {"model.py": model_py(2.0)})
    res = cli(rr, "reconcile", "--region", EU, "-o", "json")
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.stdout)["results"]
    assert (r["kind"], r["version"], r["strategy"], r["result"]) == ("reload", 2, "availability-preserving", "ok")
    assert r["prediction_error_bytes"] is not None
    fp = footprints_of(rr, m)
    assert fp.get(1, 0) > 0 and fp.get(2, 0) > 0, fp
    assert ready(rr.servers[EU]) == {m: [2]}
    assert holdings(rr, m) == ["2"]  # v1 is gone from the server, so from the ledger's holdings


@pytest.mark.slow
def test_restart_drops_stale_holdings_and_unload_finishes(
    rec_regions, unique, dev_stack: Stack, tmp_path: Path
) -> None:
    """Before: after a Triton restart the ledger kept the old server's holdings, and `tritonops unload`
    waited for memory that was never held (the sum of stale records), then failed."""
    m = unique("restart")
    rr = rec_regions({})
    rr.publishers[EU].publish(m, 1, {"model.py": model_py(1.0)})
    assert cli(rr, "reconcile", "--region", EU).exit_code == 0
    assert holdings(rr, m) == ["1"]
    kill_server(rr.servers[EU])
    new = replace_server(rr, dev_stack, tmp_path)
    try:
        rr.publishers[EU].publish(m, 2, {"model.py": model_py(2.0)})
        res = cli(rr, "reconcile", "--region", EU, "-o", "json")
        assert res.exit_code == 0, res.output
        assert ready(new) == {m: [2]}
        assert holdings(rr, m) == ["2"]
        res = cli(rr, "unload", m, "--server", SERVER, "--wait-timeout", "30", "-o", "json")
        assert res.exit_code == 0, res.output
        assert ready(new) == {}
        assert holdings(rr, m) == []
    finally:
        stack.stop(new.record)


@pytest.mark.slow
def test_a_failed_first_load_owns_nothing_and_unloads_nothing(rec_regions, unique) -> None:
    """Before: a failed load marked the model owned, and the restore unloaded a model never loaded."""
    m = unique("broken")
    rr = rec_regions({})
    rr.publishers[EU].publish(m, 1, {"model.py": model_py(1.0, broken=True)})
    ctx, counting = counting_context(rr, EU)
    report = runner.reconcile(ctx)
    assert [(r.action.model, r.result) for r in report.results] == [(m, "failed")]
    assert counting.writes == [f"load {m}"]
    assert m not in Owned(Path(rr.data["state_dir"]) / "reconcile" / EU / "owned.json").get()
    assert ready(rr.servers[EU]) == {}


def test_one_estimate_with_or_without_a_probe(tmp_path: Path) -> None:
    """Before: 1.25 x size without a probe (SizeGuess), 2 x size + 64 MiB from the ledger."""
    size = 100 << 20
    led = FootprintLedger(tmp_path / "footprints.json").predict(FootprintKey("m", 1, "d" * 64, "cpu", "2.50.0"), size)
    assert led.source == "estimate"
    assert SizeGuess().predict("m", "d" * 64, size) == led.bytes == estimate_bytes(size) == 2 * size + (64 << 20)
    assert SizeGuess().predict("tiny", "", 12_000) == estimate_bytes(12_000) > 64 << 20
