"""Faults on the real stack: the region's only Triton killed or frozen during reconcile.

Before: reconcile exited 0 when it skipped its only server, and 1 (like any error) when an action
failed. After: exit 5 (degraded), the journal and the metrics textfile name the server and the
action, and a later run converges.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Stack
from tests.models import python_model
from tests.reconcile.conftest import RecRegions, model_py
from tests.reconcile.test_e2e import cli, ready
from tritonops.dev import stack
from tritonops.reconcile.runner import EXIT_DEGRADED

EU = "eu-west-1"
pytestmark = pytest.mark.slow


def journal_last(rr: RecRegions) -> dict[str, Any]:
    lines = (Path(rr.data["state_dir"]) / "reconcile" / EU / "journal.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def prom(rr: RecRegions) -> str:
    return (Path(rr.data["state_dir"]) / "reconcile" / EU / "tritonops_reconcile.prom").read_text()


def replace_server(rr: RecRegions, dev_stack: Stack, tmp_path: Path) -> stack.TritonServer:
    """A new Triton on the region's bucket, in the config under the old server's name (a restart)."""
    rc = rr.config.region(EU)
    t = stack.start_triton(dev_stack.triton_home, rc.triton_repository_url(), tmp_path / "triton-new.log",
                           dev_stack.triton_env())  # fmt: skip
    rr.servers[EU] = t  # not stopped by the fixture: stopped by the test
    rr.rewrite(lambda d: d["regions"][EU]["servers"][0].update(http_url=t.http_url, metrics_url=t.metrics_url))
    return t


def kill_server(t: stack.TritonServer) -> None:
    """SIGKILL the Triton and its python-backend stubs, as a node or container dies: a stub left alive
    inherits Triton's open HTTP connections and would keep a client waiting for its full timeout."""
    p = psutil.Process(t.record.pid)
    children = p.children(recursive=True)
    p.kill()
    for c in children:
        with contextlib.suppress(psutil.Error):
            c.kill()


def assert_degraded(rr: RecRegions, server: str, stdout: str) -> dict[str, Any]:
    doc = json.loads(stdout)
    j = journal_last(rr)
    assert doc["degraded"] is True and j["degraded"] is True and j["exit_code"] == EXIT_DEGRADED
    assert any(server in r for r in j["degraded_reasons"]), j["degraded_reasons"]
    text = prom(rr)
    assert f'tritonops_reconcile_degraded{{region="{EU}"}} 1' in text
    return j


def test_triton_frozen_then_thawed(rec_regions, unique) -> None:
    m = unique("frz")
    rr = rec_regions({})
    rr.publishers[EU].publish(m, 1, {"model.py": model_py(2.0)})
    t = rr.servers[EU]
    os.kill(t.record.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = cli(rr, "reconcile", "--region", EU, "-o", "json")
        dt = time.monotonic() - t0
    finally:
        os.kill(t.record.pid, signal.SIGCONT)
    assert res.exit_code == EXIT_DEGRADED, res.output
    j = assert_degraded(rr, f"{EU}-a", res.stdout)
    assert j["skipped_servers"] == [f"{EU}-a"]
    assert f'tritonops_reconcile_skipped_server{{region="{EU}",server="{EU}-a"}} 1' in prom(rr)
    assert f"degraded: region {EU}: server {EU}-a: skipped" in res.stderr
    assert dt < 120, dt  # the client-side timeouts bound a frozen server

    res = cli(rr, "reconcile", "--region", EU, "-o", "json")
    assert res.exit_code == 0, res.output
    assert ready(t) == {m: [1]}
    assert journal_last(rr)["degraded"] is False
    assert f'tritonops_reconcile_degraded{{region="{EU}"}} 0' in prom(rr)


def test_triton_down_is_degraded_not_success(rec_regions, unique, dev_stack: Stack, tmp_path: Path) -> None:
    m = unique("down")
    rr = rec_regions({})
    rr.publishers[EU].publish(m, 1, {"model.py": model_py(2.0)})
    old = rr.servers[EU]
    kill_server(old)
    res = cli(rr, "reconcile", "--region", EU, "-o", "json")
    assert res.exit_code == EXIT_DEGRADED, res.output
    assert journal_last(rr)["skipped_servers"] == [f"{EU}-a"]
    new = replace_server(rr, dev_stack, tmp_path)
    try:
        res = cli(rr, "reconcile", "--region", EU, "-o", "json")
        assert res.exit_code == 0, res.output
        assert ready(new) == {m: [1]}
    finally:
        stack.stop(new.record)


def test_triton_killed_during_a_load(rec_regions, unique, dev_stack: Stack, tmp_path: Path) -> None:
    """SIGKILL while reconcile waits on a load: the action fails, exit 5; the next run converges."""
    m = unique("kill")
    rr = rec_regions({})
    slow = python_model(2.0, init="import time; time.sleep(8)").encode()
    rr.publishers[EU].publish(m, 1, {"model.py": slow})
    t = rr.servers[EU]
    p = subprocess.Popen(
        [sys.executable, "-m", "tritonops", "--config", str(rr.config_path), "reconcile", "--region", EU,
         "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    log = tmp_path / f"triton-{EU}.log"  # rec_regions' server log: Triton says when a load starts
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and p.poll() is None:
        if f'"loading: {m}:1"' in log.read_text(errors="replace"):
            time.sleep(1.0)  # inside the model's 8 s initialize
            break
        time.sleep(0.1)
    else:
        p.kill()
        pytest.fail("the load never started")
    kill_server(t)
    out, err = p.communicate(timeout=300)
    assert p.returncode == EXIT_DEGRADED, (out, err)
    doc = json.loads(out)
    assert [(r["kind"], r["model"], r["result"]) for r in doc["results"]] == [("load", m, "failed")]
    j = assert_degraded(rr, f"{EU}-a", out)
    assert any(f"load {m} v1 failed" in r for r in j["degraded_reasons"]), j["degraded_reasons"]
    assert f'model="{m}"' in prom(rr) and "tritonops_reconcile_failed_action{" in prom(rr)

    new = replace_server(rr, dev_stack, tmp_path)
    try:
        res = cli(rr, "reconcile", "--region", EU, "-o", "json")
        assert res.exit_code == 0, res.output
        assert ready(new) == {m: [1]}
    finally:
        stack.stop(new.record)
