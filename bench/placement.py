"""Benchmark of the region placement: a fleet of servers and 1,000 models under a Zipf demand that
drifts, one reconcile run after another, through ``tritonops.placement.place_region`` (the function
``reconcile`` plans with).

    PYTHONPATH=. python bench/placement.py [--servers 3,50,100,150,200] [--runs 100] [--drift 0.05]

Per run: every model's request rate is multiplied by exp(N(0, drift)) (a 5% drift by default), the
run's requests are drawn from the rates, and the placement is made from the demand of the last
``--window`` runs (the demand window) and what is loaded. A request is *warm* when its model has a
replica after that run's placement (loads are taken to finish at once: optimistic for the policy,
as Belady is). Reported against the same requests and memory:

- Belady: the offline request-level optimum on the fleet's pooled memory (the bound);
- oracle: the best online placement for independent requests, the models with the highest true
  rate this run (what a perfect demand estimate would hold; no run can beat it in expectation);
- moves: loads per run (each load is a model placed on a server it was not on), as a share of the
  models placed; planning time: ``place_region`` per run, median and max.

Targets: >= 95% of Belady; planning < 1 s; median moves per run <= 2% of the models placed.
Writes bench/results/placement.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tritonops.capacity.baselines import belady_hits  # noqa: E402
from tritonops.placement import ModelInput, PlacementPolicy, ServerInput, place_region  # noqa: E402

GPU = 16 * 10**9
FOOTPRINT = GPU // 5  # five per 16 GB GPU: the README's worked example
LOAD_S = 5.0
TARGETS = {"belady_share": 0.95, "plan_s": 1.0, "moves_share": 0.02}


def run_fleet(servers: int, models: int, runs: int, warmup: int, window: int, requests: int, drift: float,
              zipf: float, seed: int) -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng(seed)
    names = [f"model-{i:04d}" for i in range(models)]
    snames = [f"gpu-{j:03d}" for j in range(servers)]
    logw = -zipf * np.log(np.arange(1, models + 1))
    rng.shuffle(logw)
    policy = PlacementPolicy(interval_s=60.0, hysteresis=0.25, max_loads=4)
    srv = [ServerInput(n, GPU) for n in snames]
    history: list[np.ndarray] = []
    held: dict[str, tuple[str, ...]] = {}
    trace: list[np.ndarray] = []
    warm = oracle = total = 0
    loads: list[int] = []
    placed: list[int] = []
    plan_s: list[float] = []
    slots = servers * (GPU // FOOTPRINT)
    for r in range(warmup + runs):
        logw = logw + rng.normal(0.0, drift, models)
        rate = np.exp(logw - logw.max())
        reqs = rng.choice(models, size=requests, p=rate / rate.sum())
        demand = np.sum(history[-window:], axis=0) if history else np.zeros(models)
        ins = [ModelInput(names[i], FOOTPRINT, LOAD_S, float(demand[i]), loaded_on=frozenset(held.get(names[i], ())))
               for i in range(models)]  # fmt: skip
        t = time.perf_counter()
        rp = place_region(srv, ins, policy)
        dt = time.perf_counter() - t
        held = rp.assignment()
        history.append(np.bincount(reqs, minlength=models).astype(float))
        if r < warmup:
            continue
        plan_s.append(dt)
        loads.append(rp.loads)
        placed.append(len(held))
        on = np.zeros(models, bool)
        on[[int(m.split("-")[1]) for m in held]] = True
        warm += int(on[reqs].sum())
        top = np.zeros(models, bool)
        top[np.argsort(-rate)[:slots]] = True
        oracle += int(top[reqs].sum())
        total += len(reqs)
        trace.append(reqs)
    idx = np.concatenate(trace).astype(np.int64)
    bel = belady_hits(idx, np.ones(models, np.int64), slots) / len(idx)
    moves = [ld / max(1, p) for ld, p in zip(loads, placed, strict=True)]
    return {
        "servers": servers, "slots": slots, "requests": total, "warm_share": round(warm / total, 6),
        "belady": round(bel, 6), "oracle": round(oracle / total, 6),
        "belady_share": round(warm / total / bel, 6) if bel else None,
        "oracle_share": round(warm / oracle, 6) if oracle else None,
        "loads_per_run_median": statistics.median(loads), "loads_per_run_max": max(loads),
        "models_placed_median": statistics.median(placed),
        "moves_share_median": round(statistics.median(moves), 6), "moves_share_max": round(max(moves), 6),
        "plan_s_median": round(statistics.median(plan_s), 4), "plan_s_max": round(max(plan_s), 4),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", default="3,50,100,150,200")
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--window", type=int, default=15, help="demand window, in runs (900 s at a 60 s interval)")
    ap.add_argument("--requests", type=int, default=10_000, help="requests per run")
    ap.add_argument("--drift", type=float, default=0.05)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = ap.parse_args()
    rows = [run_fleet(int(n), a.models, a.runs, a.warmup, a.window, a.requests, a.drift, a.zipf, a.seed)
            for n in a.servers.split(",")]  # fmt: skip
    res = {
        "command": "PYTHONPATH=. python bench/placement.py " + " ".join(sys.argv[1:]),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "out"},
        "model": {"footprint_bytes": FOOTPRINT, "gpu_bytes": GPU, "load_s": LOAD_S},
        "targets": TARGETS, "rows": rows,
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
    }  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "placement.json").write_text(json.dumps(res, indent=2) + "\n")
    (a.out / "placement.md").write_text(markdown(res))
    print(markdown(res))


def markdown(r: dict[str, Any]) -> str:
    p = r["params"]
    lines = [
        f"# Region placement: {p['models']:,} models, Zipf({p['zipf']:g}) demand drifting {p['drift']:.0%} per run",
        "",
        f"Command: `{r['command']}` ({r['machine']}). {p['runs']} measured runs after {p['warmup']} warm-up runs; "
        f"{p['requests']:,} requests per run; demand = requests of the last {p['window']} runs; models of "
        f"{r['model']['footprint_bytes'] / 1e9:g} GB, five per 16 GB GPU; hysteresis 25%, at most 4 loads per "
        "server per run. Each run's placement is `tritonops.placement.place_region` (what `reconcile` plans with).",
        "",
        "| GPUs | slots | warm | Belady (pooled) | warm / Belady | oracle top-K | warm / oracle | loads/run "
        "(median, max) | moves / placed (median, max) | plan s (median, max) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['servers']} | {x['slots']} | {x['warm_share']:.2%} | {x['belady']:.2%} | {x['belady_share']:.1%} "
            f"| {x['oracle']:.2%} | {x['oracle_share']:.1%} | {x['loads_per_run_median']:g}, {x['loads_per_run_max']} "
            f"| {x['moves_share_median']:.2%}, {x['moves_share_max']:.2%} | {x['plan_s_median']}, {x['plan_s_max']} |"
        )
    t = r["targets"]
    lines += [
        "",
        f"Targets: warm / Belady >= {t['belady_share']:.0%}; planning < {t['plan_s']:g} s; median moves per run "
        f"<= {t['moves_share']:.0%} of the models placed.",
        "",
        "Belady is the offline request-level bound on the pooled memory (it loads at the request, knowing the "
        "future). The oracle holds the models with the highest *true* rate each run: for independent requests "
        "no online placement beats it in expectation, so warm / Belady cannot exceed oracle / Belady, whatever "
        "the placement. The machine is shared and noisy: timings are medians, and only indicative.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
