"""Two hosts, one region: two tritonops.yaml with their own state dirs and the same region, servers
and bucket, running the real entry point at the same time (docs/multi-host.md)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.models import python_model
from tests.reconcile.conftest import RecRegions
from tests.reconcile.test_e2e import ready
from tritonops.store import open_store
from tritonops.store.lease import REGION_LEASE, read_holder

EU = "eu-west-1"
pytestmark = pytest.mark.slow


def host_config(rr: RecRegions, tmp_path: Path, name: str, **lease: Any) -> Path:
    """Host ``name``'s tritonops.yaml: the same regions, servers and bucket, its own state dir."""
    data = json.loads(json.dumps(rr.data))
    data["state_dir"] = str(tmp_path / name / "state")
    if lease:
        data["lease"] = lease
    path = tmp_path / name / "tritonops.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tritonops", "--config", str(config), *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.getcwd()}


def triton_loads(log: Path) -> dict[str, int]:
    """How many times Triton itself loaded each model (its log says so once per load)."""
    out: dict[str, int] = {}
    for m in re.findall(r"successfully loaded '([^']+)'", log.read_text(errors="replace")):
        out[m] = out.get(m, 0) + 1
    return out


def slow_model(init_s: float) -> bytes:
    return python_model(1.0, init=f"import time; time.sleep({init_s})").encode()


def test_two_hosts_eight_reconciles_each_apply_every_action_once(rec_regions, unique, tmp_path: Path) -> None:
    models = sorted(unique("mh") for _ in range(6))
    rr = rec_regions({})
    for m in models:
        rr.publishers[EU].publish(m, 1, {"model.py": slow_model(0.3)})
    hosts = [host_config(rr, tmp_path, h) for h in ("host-a", "host-b")]
    procs = [
        subprocess.Popen(argv(cfg, "reconcile", "--region", EU, "-o", "json"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env())  # fmt: skip
        for _ in range(8)
        for cfg in hosts
    ]
    applied: list[tuple[str, str]] = []
    codes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        codes.append(p.returncode)
        if p.returncode == 0:
            applied += [(r["kind"], r["model"]) for r in json.loads(out)["results"]]
        else:
            assert p.returncode == 3, err
            # Named: the holder on the other host (its lease), or this host's own run (its lock).
            assert re.search(r"is held by \S+ pid \d+ \(reconcile eu-west-1|another reconcile holds .* \(pid \d+\)", err), err
    assert codes.count(0) >= 1
    # Every action applied exactly once across both hosts; later runs found nothing to do.
    assert sorted(applied) == [("load", m) for m in models]
    assert ready(rr.servers[EU]) == {m: [1] for m in models}
    loads = triton_loads(tmp_path / f"triton-{EU}.log")
    assert {m: loads.get(m, 0) for m in models} == {m: 1 for m in models}
    # Both hosts released the lease.
    assert read_holder(open_store(rr.config.region(EU), EU), REGION_LEASE) is None  # type: ignore[arg-type]


def test_holder_killed_mid_apply_another_host_takes_over_after_expiry(
    rec_regions, unique, tmp_path: Path
) -> None:
    models = sorted(unique("kill") for _ in range(4))
    rr = rec_regions({})
    rr.rewrite(lambda d: d["regions"][EU]["servers"][0].update(load_threads=1))
    for m in models:
        rr.publishers[EU].publish(m, 1, {"model.py": slow_model(1.5)})
    ttl_s = 6.0
    a = host_config(rr, tmp_path, "host-a", ttl_s=ttl_s)
    b = host_config(rr, tmp_path, "host-b", ttl_s=ttl_s)
    store = open_store(rr.config.region(EU), EU)
    err = tmp_path / "holder.err"
    with err.open("w") as f:
        holder = subprocess.Popen(argv(a, "reconcile", "--region", EU), stdout=subprocess.DEVNULL, stderr=f,
                                  env=env())  # fmt: skip
    deadline = time.monotonic() + 240  # the shared test machine runs at load 20 on 2 cores
    # Mid-apply: A holds the lease and its first load is done; the others are still to come.
    while not (ready(rr.servers[EU]) and read_holder(store, REGION_LEASE) is not None):  # type: ignore[arg-type]
        assert holder.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.1)
    dead = read_holder(store, REGION_LEASE)  # type: ignore[arg-type]
    assert dead is not None and dead.pid == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert len(ready(rr.servers[EU])) < len(models)  # killed before it finished

    # Host B: refused while the dead holder's lease runs, then takes it over and converges.
    refused = 0
    while True:
        p = subprocess.run(argv(b, "reconcile", "--region", EU), capture_output=True, text=True, env=env(),
                           timeout=300)  # fmt: skip
        if p.returncode != 3:
            break
        assert f"pid {dead.pid}" in p.stderr, p.stderr
        refused += 1
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert p.returncode == 0, p.stderr
    assert time.time() >= dead.expires_at  # never before the lease expired
    assert ready(rr.servers[EU]) == {m: [1] for m in models}
    loads = triton_loads(tmp_path / f"triton-{EU}.log")
    assert {m: loads.get(m, 0) for m in models} == {m: 1 for m in models}
    assert read_holder(store, REGION_LEASE) is None  # type: ignore[arg-type]
    # A second run on either host has nothing to do.
    for cfg in (a, b):
        p = subprocess.run(argv(cfg, "plan", "--region", EU, "--detailed-exitcode"), capture_output=True,
                           text=True, env=env(), timeout=300)  # fmt: skip
        assert p.returncode == 0, p.stdout + p.stderr
