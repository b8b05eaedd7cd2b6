"""Configs nobody here wrote: Triton's python_backend examples, and instance groups from Triton's model
configuration docs (tests/data/python_backend_examples, see its README), through `repo add`, `sync` and
`reconcile` on the real server. Every model Triton loads is served after one run, its footprint
measured or held as an estimate, and the second run plans nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.reconcile.test_e2e import cli, ready
from tritonops.memory.ledger import FootprintLedger

EU = "eu-west-1"
DATA = Path(__file__).resolve().parents[1] / "data" / "python_backend_examples"
# bls_sync calls the model its MODEL_NAME input names: reconcile's warmup (generated inputs, a string is
# "0") names no model, so it answers an error and the gate refuses it. Loaded on its own, last.
GATE_REFUSES = {"bls_sync": "Model '0' is not ready"}
EXAMPLES = sorted(p.name for p in DATA.iterdir() if (p / "config.pbtxt").is_file() and p.name not in GATE_REFUSES)
pytestmark = pytest.mark.slow


def corpus_table(rr: Any, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """(example, loaded, measured or estimate, footprint) per model: what the closing note reports."""
    ledger = FootprintLedger(Path(rr.data["state_dir"]) / "footprints.json")
    served = ready(rr.servers[EU])
    server = rr.data["regions"][EU]["servers"][0]["name"]
    results = {r["model"]: r for r in doc["results"]}
    rows = []
    for m in EXAMPLES:
        held = ledger.holding(server, m, 1) or {}
        rows.append({
            "example": m, "loaded": served.get(m) == [1], "result": results.get(m, {}).get("result"),
            "footprint": held.get("source", "measured") if held else None,
            "footprint_bytes": held.get("footprint_bytes"), "error": results.get(m, {}).get("error", ""),
        })  # fmt: skip
    return rows


def add_and_sync(rr: Any, models: list[str]) -> None:
    for m in models:
        res = cli(rr, "repo", "add", m, "--from", str(DATA / m / "1"), "--config", str(DATA / m / "config.pbtxt"))
        assert res.exit_code == 0, (m, res.output)
    assert cli(rr, "sync", "-r", EU).exit_code == 0


def test_python_backend_examples_are_served_after_one_reconcile(rec_regions) -> None:
    rr = rec_regions({})
    add_and_sync(rr, EXAMPLES)

    first = cli(rr, "reconcile", "-r", EU, "-o", "json")
    doc = json.loads(first.stdout)
    table = corpus_table(rr, doc)
    if out := os.environ.get("TRITONOPS_CORPUS_TABLE"):  # the table for a report, when asked for
        Path(out).write_text(json.dumps(table, indent=2) + "\n")
    assert first.exit_code == 0, (first.output, table)
    # Every example is served (READY at version 1) and held as measured or as an estimate.
    assert [r["example"] for r in table if not r["loaded"]] == [], table
    assert all(r["footprint"] in ("measured", "estimate") and r["footprint_bytes"] > 0 for r in table), table
    # The examples that run here have stubs the probe finds: every one of them is measured.
    assert [r["example"] for r in table if r["footprint"] != "measured"] == [], table

    second = cli(rr, "reconcile", "-r", EU, "-o", "json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["results"] == []

    # The one example the warmup gate refuses: a failed load (exit 5), and the others keep serving.
    add_and_sync(rr, sorted(GATE_REFUSES))
    third = cli(rr, "reconcile", "-r", EU, "-o", "json")
    assert third.exit_code == 5, third.output
    failed = {r["model"]: r["error"] for r in json.loads(third.stdout)["results"] if r["result"] == "failed"}
    assert failed.keys() == GATE_REFUSES.keys() and all(GATE_REFUSES[m] in e for m, e in failed.items()), failed
    assert {m: v for m, v in ready(rr.servers[EU]).items() if m in EXAMPLES} == {m: [1] for m in EXAMPLES}
