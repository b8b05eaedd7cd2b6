"""Benchmarks: time to plan 1,000 models over 10 servers (synthetic state, no network), and with
``--live`` the wall time of a no-op reconcile against the local stack with 50 models loaded,
compared with what a naive cron script does instead (call load for every model on every run).

    PYTHONPATH=. python bench/reconcile.py [--repeat 7] [--live [--live-models 50]]
    PYTHONPATH=. python bench/reconcile.py --cold [--cold-models 20,50] [--cold-repeat 3]

``--cold`` (issue 14): a cold reconcile of N python models on one empty server against the same models'
raw `POST /v2/repository/models/<m>/load` calls four at a time (target <= 1.2x); on two servers of one
region against one (target <= 1.3x); one server of another host whose ledger is empty but whose region's
bucket holds the footprints; and a second region reconciled by the same host (measured loads counted).
Writes bench/results/reconcile_cold.json and reconcile_cold.md.

Writes bench/results/reconcile.json and reconcile.md. Targets: plan < 0.5 s; no-op reconcile < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reconcile.synthetic import MB, actual, desired  # noqa: E402
from tritonops.reconcile.plan import make_plan  # noqa: E402

TARGET_S = 0.5
NOOP_TARGET_S = 2.0
EU, US = "eu-west-1", "us-east-1"


def live(n_models: int, repeat: int) -> dict[str, object]:
    """Start a one-region local stack in a temporary folder, publish ``n_models`` python models, load
    them with one reconcile, then time no-op reconciles (library and CLI) and the naive loop."""
    import os
    import subprocess
    import tempfile

    import tritonclient.http as httpclient

    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    from tests.reconcile.conftest import Publisher, model_py
    from tritonops.config import load_config
    from tritonops.dev import stack
    from tritonops.reconcile import runner

    region = "eu-west-1"
    with tempfile.TemporaryDirectory(prefix="tritonops-bench-") as tmp:
        st = stack.up(Path(tmp) / "state", Path(tmp) / "repo", regions=(region,))
        try:
            cfg = load_config(Path(st.config))
            pub = Publisher(cfg.region(region))
            for i in range(n_models):
                pub.publish(f"bench-{i:03d}", 1, {"model.py": model_py(float(i))})
            t0 = time.perf_counter()
            first = runner.reconcile(runner.context(cfg, region))
            cold_s = time.perf_counter() - t0
            assert first.failed == 0 and len(first.results) == n_models, first.to_json()
            lib = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                rep = runner.reconcile(runner.context(cfg, region))
                lib.append(time.perf_counter() - t0)
                assert rep.results == []
            cli = []
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            argv = [sys.executable, "-m", "tritonops", "--config", st.config, "reconcile", "--region", region]
            for _ in range(max(3, repeat // 2)):
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True, env=env, timeout=300)
                cli.append(time.perf_counter() - t0)
            url = cfg.region(region).servers[0].http_url or ""
            client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=300)
            t0 = time.perf_counter()
            for i in range(n_models):
                client.load_model(f"bench-{i:03d}")
            naive_s = time.perf_counter() - t0
        finally:
            stack.down(Path(tmp) / "state")
    return {
        "live_models": n_models,
        "cold_reconcile_s": round(cold_s, 2),
        "noop_reconcile_median_s": round(statistics.median(lib), 3),
        "noop_reconcile_cli_median_s": round(statistics.median(cli), 3),
        "naive_load_all_s": round(naive_s, 2),
        "noop_target_s": NOOP_TARGET_S,
        "naive_over_noop_cli": round(naive_s / statistics.median(cli), 1),
    }


def ledger_predictions(n_models: int = 1000, n_servers: int = 10, before_calls: int = 300) -> dict[str, Any]:
    """What a reconcile of ``n_models`` on ``n_servers`` asks of the footprint ledger: a prediction per
    published model and per model loaded on each server, through the port reconcile uses, against a
    ledger that knows all of them (1,000 footprints, 10,000 holdings, 200 loads of history). Compared
    with a ledger parsed again for every prediction, as before (timed on ``before_calls`` calls)."""
    import tempfile

    from tritonops.memory.ledger import FORMAT_VERSION, HISTORY_KEPT, FootprintLedger
    from tritonops.reconcile.adapters import LedgerFootprint

    digest, when = "d" * 64, "2026-11-23T00:00:00Z"
    with tempfile.TemporaryDirectory(prefix="tritonops-bench-ledger-") as tmp:
        path = Path(tmp) / "footprints.json"
        # Written directly in the ledger's format: 11,000 writes through the API would take minutes.
        doc: dict[str, Any] = {"format_version": FORMAT_VERSION, "footprints": {}, "leaks": {}, "servers": {}}
        for i in range(n_models):
            m, fp = f"m{i:04d}", (100 + i % 7) << 20
            key = f"{m}|1|{digest}|cpu|2.51.0"
            doc["footprints"][key] = {"model": m, "version": 1, "digest": digest, "device_type": "cpu",
                                      "triton_version": "2.51.0", "samples": [fp] * 3, "footprint_bytes": fp,
                                      "updated": when, "size_bytes": 1 << 20}  # fmt: skip
            for s in range(n_servers):
                doc["servers"].setdefault(f"s{s}", {})[m] = {
                    "1": {"key": key, "footprint_bytes": fp, "per_device_bytes": {}, "loaded": when}
                }
        row = {"time": when, "model": "m0000", "version": 1, "server": "s0", "measured_bytes": 1,
               "predicted_bytes": 1, "predicted_source": "measured", "error_ratio": 0.0}  # fmt: skip
        doc["loads"] = [row] * HISTORY_KEPT
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        size = path.stat().st_size
        calls = [f"m{i:04d}" for i in range(n_models)] * (n_servers + 1)
        port = LedgerFootprint(FootprintLedger(path), "cpu", "2.51.0")
        t0 = time.perf_counter()
        got = [port.predict(m, digest, 1 << 20) for m in calls]
        run_s = time.perf_counter() - t0
        assert all(b >= 100 << 20 for b in got)
        t0 = time.perf_counter()
        for m in calls[:before_calls]:
            LedgerFootprint(FootprintLedger(path), "cpu", "2.51.0").predict(m, digest, 1 << 20)
        before_per_call = (time.perf_counter() - t0) / before_calls
    return {
        "ledger_models": n_models, "ledger_servers": n_servers, "ledger_bytes": size,
        "ledger_predictions": len(calls), "ledger_predictions_s": round(run_s, 3),
        "ledger_parse_per_prediction_ms": round(before_per_call * 1000, 2),
        "ledger_predictions_parsing_each_time_s": round(before_per_call * len(calls), 1),
    }  # fmt: skip


def scenario(n_models: int = 1000, n_servers: int = 10) -> tuple[object, object]:
    """Half the models loaded at an old version, a quarter loaded current, a quarter missing; 10% pinned;
    a budget tight enough that evictions and deferrals happen."""
    models = {
        f"model-{i:04d}": (2, "pinned" if i % 10 == 0 else "on-demand", (1 + i % 7) * MB) for i in range(n_models)
    }
    servers = {f"server-{s:02d}": None for s in range(n_servers)}
    loaded = {}
    for s in range(n_servers):
        st = {}
        for i in range(n_models):
            name = f"model-{i:04d}"
            if i % 4 in (0, 1):
                st[name] = ([1], (1 + i % 7) * MB, (i * 7919 + s) % 100_000)
            elif i % 4 == 2:
                st[name] = ([2], (1 + i % 7) * MB, (i * 7919 + s) % 100_000)
        loaded[f"server-{s:02d}"] = st
    return desired(models, servers, budget=3500 * MB), actual(loaded)


# -- cold reconcile vs raw parallel loads (issue 14) ----------------------------------------------------

COLD_TARGET = 1.2  # cold reconcile of one server / raw 4-parallel loads
TWO_SERVER_TARGET = 1.3  # two servers of one region / one server


class _Cold:
    """A local stack (S3 + both regions' buckets) with ``n`` python models published in each region; every
    timed run gets fresh, empty Tritons, a fresh state dir, and (unless told) no footprint in the bucket."""

    def __init__(self, root: Path, n: int, pin: bool = False) -> None:
        import os

        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        from tests.reconcile.conftest import Publisher, model_py
        from tritonops.config import load_config
        from tritonops.dev import stack

        self.root, self.n, self.stack = root, n, stack
        self.st = stack.up(root / "state", root / "repo", regions=(EU, US))
        self.cfg = load_config(Path(self.st.config))
        self.creds = stack.Credentials.read_shared_file(root / "state" / "credentials")
        self.models = [f"cold-{i:03d}" for i in range(n)]
        for r in (EU, US):
            pub = Publisher(self.cfg.region(r))
            for i, m in enumerate(self.models):
                pub.publish(m, 1, {"model.py": model_py(float(i))})
        self.runs = 0
        self.failed = 0
        self.pin = pin

    def triton(self, region: str, index: int = 0) -> Any:
        """A fresh, empty Triton; with ``pin``, the ``index``-th server of a run gets CPU ``index`` to itself
        (its stubs inherit it), as servers on separate hosts each have their own CPUs."""
        assert self.creds is not None
        self.runs += 1
        log = self.root / f"triton-{self.runs}.log"
        url = self.cfg.region(region).triton_repository_url()
        t = self.stack.start_triton(self.root / "state" / "tritonserver", url, log, self.creds.env())
        if self.pin:
            cpu = {index % (os.cpu_count() or 1)}
            for tid in os.listdir(f"/proc/{t.record.pid}/task"):  # every thread: stubs are forked by any
                os.sched_setaffinity(int(tid), cpu)
        return t

    def forget_fleet(self, region: str) -> None:
        from tritonops.memory.fleet import PREFIX
        from tritonops.store import open_store

        store = open_store(self.cfg.region(region), region)
        store.delete([o.key for o in store.list(PREFIX)])

    def raw(self, servers: int = 1) -> float:
        """`POST /v2/repository/models/<m>/load` for every model, four at a time per server, on ``servers``
        empty Tritons at once (what a script calling Triton directly would do)."""
        from concurrent.futures import ThreadPoolExecutor

        import tritonclient.http as httpclient

        ts = [self.triton(EU, i) for i in range(servers)]
        try:
            hostports = [t.http_url.removeprefix("http://") for t in ts]

            def load(job: tuple[str, str]) -> None:
                httpclient.InferenceServerClient(job[0], network_timeout=600).load_model(job[1])

            jobs = [(h, m) for m in self.models for h in hostports]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(4 * servers) as pool:
                list(pool.map(load, jobs))
            return time.perf_counter() - t0
        finally:
            for t in ts:
                self.stack.stop(t.record)

    def reconcile(self, region: str, servers: int, state: str, known: bool = False) -> tuple[float, int]:
        """(seconds, measured loads) of one cold `reconcile` of ``region`` over ``servers`` empty Tritons."""
        import yaml

        from tritonops.config import load_config
        from tritonops.reconcile import runner

        if not known:
            self.forget_fleet(region)
        ts = [self.triton(region, i) for i in range(servers)]
        try:
            data = yaml.safe_load(Path(self.st.config).read_text())
            data["state_dir"] = str(self.root / state)
            data["regions"] = {region: data["regions"][region]}
            data["regions"][region]["servers"] = [
                {"name": f"s{i}", "http_url": t.http_url, "grpc_url": t.grpc_url, "metrics_url": t.metrics_url}
                for i, t in enumerate(ts)
            ]
            path = self.root / f"{state}-{region}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            t0 = time.perf_counter()
            rep = runner.reconcile(runner.context(load_config(path), region))
            secs = time.perf_counter() - t0
            self.failed += rep.failed  # reported: a saturated machine times out health gates
            assert len(rep.results) == self.n * servers, rep.to_json()
            return secs, sum(r.measured for r in rep.results)
        finally:
            for t in ts:
                self.stack.stop(t.record)

    def close(self) -> None:
        self.stack.down(self.root / "state")


def cold(n: int, repeat: int, pin: bool = False) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tritonops-bench-cold-") as tmp:
        c = _Cold(Path(tmp), n, pin)
        try:
            raw, raw2, one, two, known = [], [], [], [], []
            measured_one = measured_two = 0
            for i in range(repeat):
                raw.append(c.raw())
                raw2.append(c.raw(2))
                s, measured_one = c.reconcile(EU, 1, f"one-{i}")
                one.append(s)
                s, measured_two = c.reconcile(EU, 2, f"two-{i}")
                two.append(s)
                s, _ = c.reconcile(EU, 1, f"known-{i}", known=True)  # another host: the bucket knows them
                known.append(s)
            # A second region reconciled by the host that measured the first: its ledger knows the footprints.
            us_s, us_measured = c.reconcile(US, 2, f"two-{repeat - 1}")
            failed = c.failed
        finally:
            c.close()
    med = statistics.median
    return {
        "models": n,
        "repeat": repeat,
        "servers_pinned_one_cpu_each": pin,
        "load_average_1m_before_after": [round(x, 1) for x in LOAD_BEFORE] + [round(os.getloadavg()[0], 1)],
        "raw_4_parallel_loads_median_s": round(med(raw), 2),
        "reconcile_one_server_median_s": round(med(one), 2),
        "ratio_one_server_to_raw": round(med(one) / med(raw), 2),
        "target_one_server_to_raw": COLD_TARGET,
        "measured_loads_one_server": measured_one,
        "raw_4_parallel_loads_two_servers_median_s": round(med(raw2), 2),
        "ratio_raw_two_servers_to_one": round(med(raw2) / med(raw), 2),
        "reconcile_two_servers_median_s": round(med(two), 2),
        "ratio_two_servers_to_one": round(med(two) / med(one), 2),
        "ratio_two_servers_to_raw_two_servers": round(med(two) / med(raw2), 2),
        "target_two_servers_to_one": TWO_SERVER_TARGET,
        "measured_loads_two_servers": measured_two,
        "reconcile_one_server_footprints_known_median_s": round(med(known), 2),
        "ratio_known_to_raw": round(med(known) / med(raw), 2),
        "second_region_two_servers_s": round(us_s, 2),
        "second_region_measured_loads": us_measured,
        "failed_actions_all_runs": failed,
        "raw_s": [round(x, 2) for x in raw],
        "raw_two_servers_s": [round(x, 2) for x in raw2],
        "one_s": [round(x, 2) for x in one],
        "two_s": [round(x, 2) for x in two],
        "known_s": [round(x, 2) for x in known],
    }


def write_cold(rows: list[dict[str, Any]], note: str, pin: bool = False) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "reconcile_cold_pinned" if pin else "reconcile_cold"
    doc = {"format_version": 1, "benchmark": "reconcile-cold", "note": note, "python": platform.python_version(),
           "cpus": os.cpu_count(), "results": rows}  # fmt: skip
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# reconcile: cold start against raw Triton loads" + (", one CPU per server" if pin else "") + "\n",
        f"`PYTHONPATH=. python bench/reconcile.py --cold{' --pin-servers' if pin else ''}` (issue 14). Every timed "
        "run starts from empty Tritons (python-backend models, local stack, host memory probe), a fresh state "
        "dir and, unless said, no footprint in the region's bucket. Medians of the repeats; one run.\n",
        *(
            [
                "Each Triton of a run, its stubs included, is confined to a CPU of its own (the first server to CPU 0, "
                "the second to CPU 1), as servers on separate hosts have their own CPUs; the S3 server and the "
                "reconciler (or the raw load script) run on any CPU.\n"
            ]
            if pin
            else []
        ),
        f"{note}\n",
        "| models | raw 4-parallel loads | reconcile, 1 server | ratio (target 1.2) | raw, 2 servers at once | "
        "raw 2 / raw 1 | reconcile, 2 servers | 2 / 1 (target 1.3) | 2 servers / raw 2 servers"
        " | 1 server, footprints in the bucket | / raw | 2nd region, measured loads | load avg (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['models']} | {r['raw_4_parallel_loads_median_s']} s | {r['reconcile_one_server_median_s']} s | "
            f"{r['ratio_one_server_to_raw']} | {r['raw_4_parallel_loads_two_servers_median_s']} s | "
            f"{r['ratio_raw_two_servers_to_one']} | {r['reconcile_two_servers_median_s']} s | "
            f"{r['ratio_two_servers_to_one']} | {r['ratio_two_servers_to_raw_two_servers']} | "
            f"{r['reconcile_one_server_footprints_known_median_s']} s | "
            f"{r['ratio_known_to_raw']} | {r['second_region_measured_loads']} of {2 * r['models']} | "
            f"{r['load_average_1m_before_after']} |"
            + (f" ({r['failed_actions_all_runs']} actions failed)" if r["failed_actions_all_runs"] else "")
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


LOAD_BEFORE: list[float] = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--live", action="store_true", help="also time a no-op reconcile on the local stack")
    ap.add_argument("--live-models", type=int, default=50)
    ap.add_argument("--cold", action="store_true", help="only the cold reconcile vs raw loads (issue 14)")
    ap.add_argument("--cold-models", default="20,50", help="model counts, comma-separated")
    ap.add_argument("--cold-repeat", type=int, default=3)
    ap.add_argument(
        "--pin-servers", action="store_true",
        help="with --cold: give each Triton of a run its own CPU (results to reconcile_cold_pinned.*)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.cold:
        rows: list[dict[str, Any]] = []
        for n in (int(x) for x in args.cold_models.split(",")):
            LOAD_BEFORE[:] = [os.getloadavg()[0]]
            rows.append(cold(n, args.cold_repeat, args.pin_servers))
            note = f"Load average (1 min) when started: {LOAD_BEFORE[0]:.1f} on {os.cpu_count()} CPUs."
            write_cold(rows, note, args.pin_servers)
            print(json.dumps(rows[-1], indent=2))
        return
    d, a = scenario()
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        plan = make_plan(d, a)  # type: ignore[arg-type]
        _ = plan.digest  # the checksum is part of producing a plan
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    result = {
        "format_version": 1,
        "benchmark": "reconcile-plan",
        "models": 1000,
        "servers": 10,
        "repeat": args.repeat,
        "plan_median_s": round(med, 4),
        "plan_min_s": round(min(times), 4),
        "target_s": TARGET_S,
        "ratio_to_target": round(med / TARGET_S, 3),
        "actions": plan.summary(),
        "notes": len(plan.notes),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    result.update(ledger_predictions())
    if args.live:
        result.update(live(args.live_models, args.repeat))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "reconcile.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "reconcile.md").write_text(
        "# reconcile: plan time\n\n"
        f"`PYTHONPATH=. python bench/reconcile.py` on {platform.machine()}, "
        f"Python {platform.python_version()}.\n\n"
        "| what | median | min | target | median / target |\n| --- | --- | --- | --- | --- |\n"
        f"| plan 1,000 models x 10 servers (synthetic) | {med:.3f} s | {min(times):.3f} s | {TARGET_S} s "
        f"| {med / TARGET_S:.2f} |\n\n"
        f"Actions in the plan: { {str(k): v for k, v in result['actions'].items()} }; notes: {result['notes']}.\n\n"
        "No other tool plans Triton model placement, so the plan has no baseline to compare with.\n\n"
        f"## Footprint predictions, {result['ledger_models']:,} models on {result['ledger_servers']} servers\n\n"
        f"A reconcile asks the ledger ({result['ledger_bytes'] / 1e6:.1f} MB here) for "
        f"{result['ledger_predictions']:,} predictions: one per published model and one per model loaded on "
        f"each server. They took {result['ledger_predictions_s']} s. Parsed again for every prediction (as "
        f"before the parsed ledger was kept while the file is unchanged), each took "
        f"{result['ledger_parse_per_prediction_ms']} ms (timed on 300 calls): "
        f"{result['ledger_predictions_parsing_each_time_s']} s for the same run.\n"
        + (
            f"\n## No-op reconcile, local stack, {result['live_models']} python models loaded\n\n"
            "| what | median |\n| --- | --- |\n"
            f"| no-op reconcile, library call | {result['noop_reconcile_median_s']} s |\n"
            "| no-op `tritonops reconcile` (new process each time) | "
            f"{result['noop_reconcile_cli_median_s']} s |\n"
            f"| naive cron loop: `load_model` for every model | {result['naive_load_all_s']} s |\n"
            f"| first reconcile (loads all) | {result['cold_reconcile_s']} s |\n\n"
            f"Target for the no-op: < {NOOP_TARGET_S} s. The naive loop takes "
            f"{result['naive_over_noop_cli']}x the no-op CLI run "
            "(a load call on an already loaded model still costs the server time).\n"
            if args.live
            else "\nThe no-op reconcile on the local stack was not run (pass --live).\n"
        )
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
