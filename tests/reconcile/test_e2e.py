"""End to end on the local stack: real S3 server, real tritonservers, the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from tests.reconcile.conftest import RecRegions, model_py
from tritonops.cli import app
from tritonops.dev import stack
from tritonops.reconcile import runner
from tritonops.reconcile.lock import region_lock

EU, US = "eu-west-1", "us-east-1"
pytestmark = pytest.mark.slow


def cli(rr: RecRegions, *args: str) -> Any:
    res = CliRunner().invoke(app, ["--config", str(rr.config_path), *args])
    return res


def ready(server: stack.TritonServer) -> dict[str, list[int]]:
    c = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    out: dict[str, list[int]] = {}
    for r in c.get_model_repository_index():
        if r.get("state") == "READY":
            out.setdefault(r["name"], []).append(int(r["version"]))
    return {k: sorted(v) for k, v in out.items()}


def infer(server: stack.TritonServer, model: str) -> list[float]:
    c = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    i = httpclient.InferInput("X", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return [float(v) for v in c.infer(model, [i]).as_numpy("Y")[0]]


class Counting:
    """Wraps the real control a reconcile uses, recording the calls that change a server."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.writes: list[str] = []

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def load(self, model: str, *args: Any, **kw: Any) -> int | None:
        self.writes.append(f"load {model}")
        return self.inner.load(model, *args, **kw)

    def unload(self, model: str) -> None:
        self.writes.append(f"unload {model}")
        self.inner.unload(model)


def counting_context(rr: RecRegions, region: str) -> tuple[runner.Context, Counting]:
    """The context `tritonops reconcile` builds (same ports), with the server's control counted."""
    ctx = runner.context(rr.config, region)
    name = f"{region}-a"
    counting = Counting(ctx.ports.controls[name])
    ctx.ports.controls[name] = counting
    return ctx, counting


def test_reconcile_end_to_end(rec_regions, unique) -> None:
    pin, a, b, eu_only = unique("pin"), unique("a"), unique("b"), unique("euonly")
    rr = rec_regions({pin: {"placement": "pinned"}, a: {}, b: {}, eu_only: {"regions": [EU]}})
    for r in (EU, US):
        for m in (pin, a, b):
            rr.publishers[r].publish(m, 1, {"model.py": model_py(1.0)})
    rr.publishers[EU].publish(eu_only, 1, {"model.py": model_py(1.0)})
    # Published by mistake where residency forbids it: reconcile must not load it there.
    rr.publishers[US].publish(eu_only, 1, {"model.py": model_py(1.0)})

    # plan --detailed-exitcode: 2 while changes are pending; JSON has the documented fields
    res = cli(rr, "plan", "--region", EU, "--detailed-exitcode", "-o", "json")
    assert res.exit_code == 2, res.output
    doc = json.loads(res.stdout)
    assert doc["format_version"] == 1 and len(doc["digest"]) == 64
    assert sorted((x["kind"], x["model"], x["version"]) for x in doc["actions"]) == sorted(
        ("load", m, 1) for m in (pin, a, b, eu_only)
    )

    for r in (EU, US):
        res = cli(rr, "reconcile", "--region", r, "-o", "json")
        assert res.exit_code == 0, res.output
        # every load was measured (host probe of this Triton's process tree) and compared with the prediction
        assert all(x["prediction_error_bytes"] is not None for x in json.loads(res.stdout)["results"])
    assert ready(rr.servers[EU]) == {pin: [1], a: [1], b: [1], eu_only: [1]}
    assert ready(rr.servers[US]) == {pin: [1], a: [1], b: [1]}
    plan_us = json.loads(cli(rr, "plan", "--region", US, "-o", "json").stdout)
    assert any(n["kind"] == "problem" and eu_only in n["message"] for n in plan_us["notes"])
    # last-inference order for LRU later: b oldest, then eu_only, then a
    for m in (b, eu_only, pin, a):
        assert infer(rr.servers[EU], m) == [1.0, 2.0, 3.0, 4.0]

    # nothing changed: a second run makes no load or unload call, and plan exits 0
    ctx, counting = counting_context(rr, EU)
    report = runner.reconcile(ctx)
    assert report.results == [] and counting.writes == []
    assert cli(rr, "plan", "--region", EU, "--detailed-exitcode").exit_code == 0

    # v2: serves, v1 gone; availability-preserving (no budget, room for both)
    rr.publishers[EU].publish(a, 2, {"model.py": model_py(2.0)})
    res = cli(rr, "reconcile", "--region", EU, "-o", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [(x["kind"], x["model"], x["version"], x["result"], x["strategy"]) for x in doc["results"]] == [
        ("reload", a, 2, "ok", "availability-preserving")
    ]
    assert ready(rr.servers[EU])[a] == [2]
    assert infer(rr.servers[EU], a) == [2.0, 4.0, 6.0, 8.0]

    # broken v3: each run fails its gate and restores v2; the third failure quarantines it
    rr.publishers[EU].publish(a, 3, {"model.py": model_py(3.0, broken=True)})
    for attempt in range(3):
        res = cli(rr, "reconcile", "--region", EU, "-o", "json")
        assert res.exit_code == runner.EXIT_DEGRADED, res.output
        doc = json.loads(res.stdout)
        (r3,) = doc["results"]
        assert (r3["model"], r3["version"], r3["result"]) == (a, 3, "failed")
        assert r3["quarantined"] is (attempt == 2)
        assert ready(rr.servers[EU])[a] == [2]
        assert infer(rr.servers[EU], a) == [2.0, 4.0, 6.0, 8.0]
    plan = json.loads(cli(rr, "plan", "--region", EU, "-o", "json").stdout)
    assert plan["actions"] == []
    assert [(n["kind"], n["model"]) for n in plan["notes"]] == [("quarantined", a)]
    prom = (Path(rr.data["state_dir"]) / "reconcile" / EU / "tritonops_reconcile.prom").read_text()
    assert f'tritonops_quarantined_models{{region="{EU}"}} 1' in prom
    journal = (Path(rr.data["state_dir"]) / "reconcile" / EU / "journal.jsonl").read_text().splitlines()
    assert len(journal) >= 6 and all(len(json.loads(j)["plan_digest"]) == 64 for j in journal)

    # budget smaller than what is loaded: the LRU on-demand model (b) is evicted, never the pinned one
    ctx = runner.context(rr.config, EU)
    _, actual, _ = runner._states(ctx)
    loaded = actual.servers[f"{EU}-a"].loaded
    total = sum(lm.footprint_bytes for lm in loaded.values())
    rr.rewrite(lambda d: d["regions"][EU]["servers"][0].update(memory_budget_bytes=total - 1))
    res = cli(rr, "reconcile", "--region", EU, "-o", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [(x["kind"], x["model"]) for x in doc["results"]] == [("evict", b)]
    assert ready(rr.servers[EU]) == {pin: [1], a: [2], eu_only: [1]}
    # and the next run neither loads b back nor evicts anything else
    ctx, counting = counting_context(rr, EU)
    report = runner.reconcile(ctx)
    assert counting.writes == [] and report.results == []


def test_stale_plan_is_refused_and_lock_gives_exit_3(rec_regions, unique, tmp_path: Path) -> None:
    m1, m2 = unique("m"), unique("m")
    rr = rec_regions({})
    rr.publishers[EU].publish(m1, 1, {"model.py": model_py(1.0)})
    plan_file = tmp_path / "plan.json"
    assert cli(rr, "plan", "--region", EU, "--out", str(plan_file)).exit_code == 0
    rr.publishers[EU].publish(m2, 1, {"model.py": model_py(1.0)})  # the world moves on
    res = cli(rr, "apply", str(plan_file))
    assert res.exit_code == 1 and "stale" in res.output
    assert ready(rr.servers[EU]) == {}

    # a fresh plan applies exactly
    assert cli(rr, "plan", "--region", EU, "--out", str(plan_file)).exit_code == 0
    res = cli(rr, "apply", str(plan_file), "-o", "json")
    assert res.exit_code == 0, res.output
    assert ready(rr.servers[EU]) == {m1: [1], m2: [1]}

    # the lock held by another run: the real entry point exits 3, touching nothing
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    argv = [sys.executable, "-m", "tritonops", "--config", str(rr.config_path), "reconcile", "--region", EU]
    with region_lock(Path(rr.data["state_dir"]) / "reconcile" / EU / "reconcile.lock", EU):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "another reconcile holds" in proc.stderr

    # two started together while there is work to do: one applies, the other exits 3
    m3 = unique("m")
    rr.publishers[EU].publish(m3, 1, {"model.py": model_py(1.0)})
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(2)
    ]
    rcs = sorted(p.wait(timeout=120) for p in procs)
    assert rcs == [0, 3]
    assert ready(rr.servers[EU]) == {m1: [1], m2: [1], m3: [1]}


def test_server_down_is_skipped_and_reported(rec_regions, unique) -> None:
    m = unique("m")
    rr = rec_regions({})
    rr.rewrite(
        lambda d: d["regions"][EU]["servers"].append(
            {"name": "down", "http_url": f"http://127.0.0.1:{stack.free_port()}"}
        )
    )
    rr.publishers[EU].publish(m, 1, {"model.py": model_py(1.0)})
    res = cli(rr, "reconcile", "--region", EU, "-o", "json")
    # The other server is reconciled, but cron must see the unreachable one (issue 13: was exit 0).
    assert res.exit_code == runner.EXIT_DEGRADED, res.output
    assert f"degraded: region {EU}: server down: skipped" in res.stderr
    doc = json.loads(res.stdout)
    assert doc["skipped_servers"] == ["down"] and doc["degraded"] is True
    assert [(x["server"], x["model"], x["result"]) for x in doc["results"]] == [(f"{EU}-a", m, "ok")]
    assert ready(rr.servers[EU]) == {m: [1]}


def test_sync_then_reconcile_with_residency_and_a_new_version(rec_regions, unique, tmp_path: Path) -> None:
    """The real publishing stage (`repo add_version` + `sync`) feeding reconcile, in both regions."""
    from tritonops.release.pointer import publish_release
    from tritonops.repo.repository import add_version
    from tritonops.store.sync import SyncOptions, sync

    both, eu_only = unique("both"), unique("euonly")
    rr = rec_regions({eu_only: {"regions": [EU]}})
    cfg = rr.config

    def add(model: str, factor: float) -> None:
        src = tmp_path / f"src-{model}-{factor}"
        src.mkdir(parents=True, exist_ok=True)
        (src / "model.py").write_bytes(model_py(factor))
        conf = tmp_path / f"{model}.pbtxt"
        conf.write_text(CONFIG.format(name=model))
        add_version(cfg.repository_path, model, src / "model.py", config=conf)

    add(both, 1.0)
    add(eu_only, 1.0)
    sync(cfg, [EU, US], SyncOptions(), releases=publish_release)
    for r in (EU, US):
        res = cli(rr, "reconcile", "--region", r, "-o", "json")
        assert res.exit_code == 0, res.output
    assert ready(rr.servers[EU]) == {both: [1], eu_only: [1]}
    assert ready(rr.servers[US]) == {both: [1]}

    add(both, 2.0)
    sync(cfg, [EU, US], SyncOptions(), releases=publish_release)
    for r in (EU, US):
        res = cli(rr, "reconcile", "--region", r, "-o", "json")
        assert res.exit_code == 0, res.output
        assert [(x["kind"], x["model"], x["version"]) for x in json.loads(res.stdout)["results"]] == [
            ("reload", both, 2)
        ]
        assert ready(rr.servers[r])[both] == [2]
        assert infer(rr.servers[r], both) == [2.0, 4.0, 6.0, 8.0]


CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


class KillOnSecondLoad(Counting):
    """Kills the Triton process (SIGKILL, like a crash) just before the second load reaches it."""

    def __init__(self, inner: Any, server: stack.TritonServer) -> None:
        super().__init__(inner)
        self.server = server
        self.children: list[Any] = []

    def load(self, model: str, *args: Any, **kw: Any) -> int | None:
        if sum(w.startswith("load") for w in self.writes) == 1:
            p = self.server.record.process()
            assert p is not None
            for _ in range(5):  # a stub of a load in flight may come or go while the tree is listed
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.children = p.children(recursive=True)
                    break
            p.kill()
            p.wait(10)
        return super().load(model, *args, **kw)


def test_triton_killed_during_apply_is_reported_and_a_later_run_converges(
    rec_regions, unique, dev_stack, tmp_path: Path
) -> None:
    models = sorted(unique("k") for _ in range(3))
    rr = rec_regions({})
    # One load call at a time, so "the second load" is well defined.
    rr.rewrite(lambda d: d["regions"][EU]["servers"][0].update(load_threads=1))
    for m in models:
        rr.publishers[EU].publish(m, 1, {"model.py": model_py(1.0)})
    ctx = runner.context(rr.config, EU)
    name = f"{EU}-a"
    killer = KillOnSecondLoad(ctx.ports.controls[name], rr.servers[EU])
    ctx.ports.controls[name] = killer
    report = runner.reconcile(ctx)
    for c in killer.children:  # the crashed server's python stubs
        with contextlib.suppress(Exception):
            c.kill()
    # The third load was already in flight beside the second (apply runs loads in parallel): it fails
    # or, when it had not started, is skipped; nothing is started once the crash is seen.
    assert [(r.action.model, r.result) for r in report.results[:2]] == [(models[0], "ok"), (models[1], "failed")]
    third = report.results[2]
    assert third.result in ("failed", "skipped"), third
    assert third.result == "failed" or "stopped answering" in third.error
    assert killer.writes[:2] == [f"load {models[0]}", f"load {models[1]}"] and len(killer.writes) <= 3

    # the server comes back (empty, on a new port); the next run converges
    t = stack.start_triton(
        dev_stack.triton_home,
        rr.servers[EU].repository_url,
        tmp_path / "restarted.log",
        dev_stack.triton_env(),
    )
    try:
        rr.rewrite(
            lambda d: d["regions"][EU]["servers"][0].update(http_url=t.http_url, metrics_url=t.metrics_url)
        )
        res = cli(rr, "reconcile", "--region", EU, "-o", "json")
        assert res.exit_code == 0, res.output
        assert ready(t) == {m: [1] for m in models}
    finally:
        stack.stop(t.record)
