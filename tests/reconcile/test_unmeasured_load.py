"""A probe that cannot measure a load does not take the model away: Triton serves it, tritonops holds it
at its estimate (plus a margin), says so everywhere (run report, journal, metrics, `status`, `mem`) and
keeps the budget with it. Real Triton, real bucket; the probe is the real host probe, made blind to
python stubs and handed to reconcile through the port it already takes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reconcile.conftest import model_py
from tests.reconcile.test_e2e import cli, infer, ready
from tritonops.memory.host_probe import HostProbe
from tritonops.memory.ledger import estimate_bytes
from tritonops.memory.unmeasured import unmeasured_bytes
from tritonops.reconcile import runner
from tritonops.reconcile.adapters import ControlAdapter
from tritonops.repo.repository import add_version

EU = "eu-west-1"
pytestmark = pytest.mark.slow

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ name: "cpu_pool" kind: KIND_CPU count: {count} }} ]
"""


class BlindToStubs(HostProbe):
    """The server's real host probe, except that it sees no python-backend stub (as when the stubs run
    where the probe cannot look): every stub measurement fails, everything else reads as usual."""

    def stubs(self) -> list:  # type: ignore[type-arg]
        return []


def blind_context(rr) -> runner.Context:  # type: ignore[no-untyped-def]
    ctx = runner.context(rr.config, EU)
    for ctl in ctx.ports.controls.values():
        assert isinstance(ctl, ControlAdapter) and isinstance(ctl.probe, HostProbe)
        ctl.probe = BlindToStubs(ctl.probe.pid)
    return ctx


def add(rr, tmp_path: Path, model: str, count: int) -> int:  # type: ignore[no-untyped-def]
    """Add version 1 of ``model`` to the repository; its size in bytes."""
    src = tmp_path / model
    src.mkdir()
    (src / "model.py").write_bytes(model_py(2.0))
    conf = tmp_path / f"{model}.pbtxt"
    conf.write_text(CONFIG.format(name=model, count=count))
    return add_version(rr.config.repository_path, model, src / "model.py", config=conf).size


def test_a_load_its_probe_cannot_measure_serves_at_its_estimate_within_budget(
    rec_regions, unique: Callable[[str], str], tmp_path: Path
) -> None:
    rr = rec_regions({})
    blind, other = unique("blind"), unique("other")
    size = add(rr, tmp_path, blind, 2)
    held = unmeasured_bytes(size, 2)  # two instances, each a stub of its own, plus the margin
    # A budget the blind model fits at its estimate, with less than another model's estimate left over;
    # had it been held at the first guess (one instance, no margin) the other would fit too.
    budget = held + estimate_bytes(size) // 2
    assert estimate_bytes(size) * 2 <= budget
    rr.rewrite(lambda d: d["regions"][EU]["servers"][0].update(memory_budget_bytes=budget))
    assert cli(rr, "sync", "-r", EU).exit_code == 0

    ctx = blind_context(rr)
    metrics = tmp_path / "metrics.prom"
    report = runner.reconcile(ctx, metrics_file=metrics)
    doc = report.to_json()
    [r] = doc["results"]
    assert (r["model"], r["result"], r["footprint_source"], r["estimate_bytes"]) == (blind, "ok", "estimate", held)
    assert "no python-backend stub process" in r["measure_error"] and "cpu_pool_0" in r["measure_error"]
    # Served, and reported: not a failure (exit 0), a warning naming the model; the journal; the metric.
    assert ready(rr.servers[EU]) == {blind: [1]}
    assert infer(rr.servers[EU], blind) == [2.0, 4.0, 6.0, 8.0]
    assert doc["exit_code"] == 0 and not doc["degraded"]
    assert [w for w in doc["warnings"] if blind in w and "could not be measured" in w and str(held) in w]
    journal = [json.loads(line) for line in (ctx.dir / "journal.jsonl").read_text().splitlines()]
    assert journal[-1]["results"][0]["footprint_source"] == "estimate"
    text = metrics.read_text()
    assert f'tritonops_reconcile_unmeasured_loads{{region="{EU}"}} 1' in text
    assert f'model="{blind}"' in text.split("tritonops_reconcile_unmeasured_load_bytes{", 1)[1].split("\n", 1)[0]

    # `status` and `mem` show the footprint as the estimate it is.
    status = cli(rr, "status", "-r", EU, "-o", "json")
    assert status.exit_code == 0, status.output
    [srv] = json.loads(status.stdout)["servers"]
    assert srv["models"][blind]["versions"]["1"] | {"reason": ""} == {
        "state": "READY", "reason": "", "footprint_bytes": held, "footprint_source": "estimate",
    }  # fmt: skip
    assert "estimate" in cli(rr, "status", "-r", EU).output
    mem = cli(rr, "mem", "-s", srv["server"], "-o", "json")
    assert mem.exit_code == 0, mem.output
    [row] = [m for m in json.loads(mem.stdout)["servers"][0]["models"] if m["model"] == blind]
    assert (row["footprint_bytes"], row["footprint_source"]) == (held, "estimate")

    # The next run places with the estimate: another model does not fit beside it, and nothing reloads.
    add(rr, tmp_path, other, 1)
    assert cli(rr, "sync", "-r", EU).exit_code == 0
    again = runner.reconcile(blind_context(rr)).to_json()
    assert again["results"] == [], again["results"]
    # What is free is the budget less the estimate held for the blind model, margin included.
    room = [n for n in again["notes"] if n["model"] == other and f"has {budget - held} free" in n["message"]]
    assert room, again["notes"]
    assert ready(rr.servers[EU]) == {blind: [1]}
