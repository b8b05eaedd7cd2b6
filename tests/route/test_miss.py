"""Misses are demand: a request for a model placed nowhere gets 503 + Retry-After from the region's
Envoy, Envoy counts it, the `envoy` demand source reads the count, and the next run of a real
`tritonops reconcile --every` loop loads the model and routes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from tritonclient.utils import InferenceServerException

from tests.route.conftest import EU, Routed, infer_http
from tests.route.test_routing import raw
from tritonops.route.update import update_routes

pytestmark = pytest.mark.slow
EVERY_S = 5


class Loop:
    """`tritonops reconcile --every` as a subprocess; each run's JSON line with the time it arrived."""

    def __init__(self, rt: Routed) -> None:
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        argv = [sys.executable, "-m", "tritonops", "--config", str(rt.config_path), "reconcile", "--region", EU,
                "--every", f"{EVERY_S}s", "-o", "json"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.runs: list[tuple[float, dict[str, Any]]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.runs.append((time.monotonic(), json.loads(line)))

    def wait_runs(self, n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.runs) < n:
            assert time.monotonic() < deadline, f"only {len(self.runs)} runs"
            assert self.proc.poll() is None, "the loop exited"
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def test_a_miss_becomes_a_loaded_model_within_one_every_interval(routed_factory, unique) -> None:
    rt: Routed = routed_factory()
    cold = unique("cold")
    rt.publish(EU, cold, [1])

    def edit(d: dict[str, Any]) -> None:
        d["regions"][EU]["demand"] = {"window_s": 60, "sources": [{"kind": "envoy", "admin": rt.envoys[EU].admin}]}

    rt.rewrite(edit)
    update_routes(rt.config, EU)
    loop = Loop(rt)
    try:
        loop.wait_runs(1)
        assert not any(r["model"] == cold for r in loop.runs[0][1]["results"])  # no demand: not loaded
        code, headers, _ = raw(f"{rt.envoys[EU].url}/v2/models/{cold}/infer")
        assert code == 503 and headers.get("retry-after")
        missed_at = time.monotonic()
        n = len(loop.runs)
        # The first run that starts after the miss loads the model; its routes then send requests to it.
        loop.wait_runs(n + 1, timeout_s=EVERY_S + 120)
        t, doc = loop.runs[n]
        loaded = [r for r in doc["results"] if r["model"] == cold]
        assert loaded and loaded[0]["kind"] == "load" and loaded[0]["result"] == "ok", doc
        assert doc["exit_code"] == 0, doc["degraded_reasons"]
        assert t - doc["duration_s"] - missed_at < EVERY_S + 1  # the run began within one interval
        for _ in range(50):
            try:
                assert infer_http(rt.http(EU), cold) == 1.0
                break
            except InferenceServerException:
                time.sleep(0.1)  # Envoy's first health check of the new replica
        else:
            pytest.fail("the loaded model is not routed")
    finally:
        loop.stop()
