"""Benchmark: what a `tritonops` command costs before it does anything (start-up), and a no-op sync.

Each case runs the real entry point (`python -m tritonops ...`) as a fresh process, N times, and
reports the median wall time and the median CPU time (user + sys of the child; less sensitive than
wall time to other work on a shared machine). With `--baseline DIR`, the same cases also run
against another checkout of tritonops (PYTHONPATH=DIR), interleaved run by run with this one, so
both see the same load.

Cases:
  version   tritonops --version               (target: < 0.3 s)
  help      tritonops --help                  (target: < 0.3 s)
  sync-help tritonops sync --help
  noop      a no-op `tritonops sync` of 1,000 models on a local moto_server (target: < 0.5 s)

    python bench/cli.py                          # 10 runs each, this checkout
    python bench/cli.py --baseline /work/main    # before/after, same run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

TARGETS_S = {"version": 0.3, "help": 0.3, "noop": 0.5}


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall s, cpu s) of one run; a failure is an error, not a time.

    ``cwd`` must not hold a tritonops checkout: ``python -m`` puts the working directory first on
    sys.path, ahead of PYTHONPATH, which would pick the variant."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--baseline", type=Path, help="another tritonops checkout to compare with, same run")
    ap.add_argument("--cases", default="version,help,sync-help,noop")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cases = args.cases.split(",")
    variants = {"this": ROOT}
    if args.baseline:
        variants = {"baseline": args.baseline.resolve(), **variants}
    work = Path(tempfile.mkdtemp(prefix="tritonops-bench-cli-", dir="/tmp"))
    results: dict = {
        "format_version": 1,
        "runs": args.runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "variants": {k: str(v) for k, v in variants.items()},
        "load_before": load_note(),
        "cases": {},
    }
    bench = None
    try:
        argv = {"version": ["--version"], "help": ["--help"], "sync-help": ["sync", "--help"]}
        if "noop" in cases:
            import sync as bench_sync  # bench/sync.py: the same local S3 server and repository maker

            bench = bench_sync.Bench(work, "moto")
            src = work / "repo"
            bench_sync.make_repo(src, {f"m{i:04d}": {} for i in range(args.models)})
            argv["noop"] = bench.command("tritonops", src, "noop")[3:]
            bench.run("tritonops", src, "noop")  # the first sync, untimed
        base_env = {**os.environ, **(bench.env if bench else {}), "NO_COLOR": "1"}
        for case in cases:
            times: dict[str, dict[str, list[float]]] = {v: {"wall_s": [], "cpu_s": []} for v in variants}
            for _ in range(args.runs):
                for v, root in variants.items():  # interleaved: both see the same load
                    env = {**base_env, "PYTHONPATH": str(root)}
                    wall, cpu = timed([sys.executable, "-m", "tritonops", *argv[case]], env, work)
                    times[v]["wall_s"].append(wall)
                    times[v]["cpu_s"].append(cpu)
            results["cases"][case] = {
                v: {
                    "median_wall_s": round(statistics.median(t["wall_s"]), 3),
                    "median_cpu_s": round(statistics.median(t["cpu_s"]), 3),
                    "wall_s": [round(x, 3) for x in t["wall_s"]],
                }
                for v, t in times.items()
            }
            print(f"{case}: {json.dumps({v: r['median_wall_s'] for v, r in results['cases'][case].items()})}",
                  file=sys.stderr)  # fmt: skip
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = load_note()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli.json").write_text(json.dumps(results, indent=2) + "\n")
    write_md(results, args.out / "cli.md", args.models)
    print((args.out / "cli.md").read_text())


def write_md(results: dict, path: Path, models: int) -> None:
    variants = list(results["variants"])
    labels = {
        "version": "`tritonops --version`",
        "help": "`tritonops --help`",
        "sync-help": "`tritonops sync --help`",
        "noop": f"no-op `tritonops sync`, {models} models, moto",
    }
    head = " | ".join(f"{v}: wall (cpu)" for v in variants)
    lines = [
        "# tritonops start-up: what a command costs before it does anything",
        "",
        f"Fresh process per run (`python -m tritonops ...`), {results['runs']} runs per case, medians in "
        f"seconds: wall time (CPU time, user + sys). Machine: {results['machine']}; "
        f"{results['load_before']} before, {results['load_after']} after.",
        "",
        f"| case | target | {head} |",
        "| --- | --- | " + " | ".join("---" for _ in variants) + " |",
    ]
    for case, r in results["cases"].items():
        target = f"< {TARGETS_S[case]} s" if case in TARGETS_S else ""
        cells = [f"{r[v]['median_wall_s']:.3f} ({r[v]['median_cpu_s']:.3f})" for v in variants]
        lines.append(f"| {labels[case]} | {target} | " + " | ".join(cells) + " |")
    lines += ["", "Variants: " + ", ".join(f"{k} = `{v}`" for k, v in results["variants"].items()) + ".",
              f"Raw times: `cli.json`. Reproduce: `python bench/cli.py {' '.join(sys.argv[1:])}`", ""]  # fmt: skip
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
