"""`tritonops config validate` on a huge tritonops.yaml (200k model rules): before and after.

Usage: python bench/config_validate.py [--rules 200000] [--runs 3] [--work /tmp]

"before" is the old path in this same process: PyYAML's pure-Python safe loader, then the same
pydantic validation. "after" is what ships: ``load_config`` (libyaml's C loader when PyYAML has
it) timed in process, and the whole CLI (`config validate`, table and -o json) timed as a process
each. json.loads of the same data is timed too, as a yardstick for how busy the machine is.
Writes bench/results/config_validate.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")


def write_config(path: Path, rules: int) -> None:
    lines = ["repository: repo", "regions:"]
    for r in REGIONS:
        lines += [f"  {r}:", f"    bucket: s3://models-{r}/triton", "    servers:",
                  f"      - name: {r}-gpu-0", "        http_url: http://10.0.0.5:8000"]  # fmt: skip
    lines.append("models:")
    for i in range(rules):
        regions = ", ".join(REGIONS[: 1 + i % len(REGIONS)])
        placement = "pinned" if i % 7 == 0 else "on-demand"
        lines.append(f"  model-{i:06d}: {{regions: [{regions}], placement: {placement}}}")
    path.write_text("\n".join(lines) + "\n")
    (path.parent / "repo").mkdir(exist_ok=True)


def timed(fn: Any) -> tuple[float, Any]:
    """CPU seconds of this process (a shared machine's wall clock mostly measures the neighbours)."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def cli_seconds(cfg: Path, extra: list[str]) -> float:
    """CPU seconds (user + system) of one `config validate` process, from the kernel."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "tritonops", "-c", str(cfg), "config", "validate", *extra],
                         env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    _, status, ru = os.wait4(p.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    from tritonops.config import load_config, parse_config

    with tempfile.TemporaryDirectory(dir=args.work) as d:
        cfg = Path(d) / "tritonops.yaml"
        write_config(cfg, args.rules)
        size = cfg.stat().st_size
        text = cfg.read_text()
        before_s, data = timed(lambda: parse_config(yaml.load(text, Loader=yaml.SafeLoader), cfg))  # noqa: S506
        blob = json.dumps(data.model_dump(mode="json"))
        json_s = statistics.median(timed(lambda: json.loads(blob))[0] for _ in range(args.runs))
        after_s = statistics.median(timed(lambda: load_config(cfg))[0] for _ in range(args.runs))
        cli_json = statistics.median(cli_seconds(cfg, ["-o", "json"]) for _ in range(args.runs))
        cli_table = statistics.median(cli_seconds(cfg, []) for _ in range(args.runs))
    res = {
        "rules": args.rules, "file_bytes": size, "runs": args.runs,
        "libyaml": bool(getattr(yaml, "__with_libyaml__", False)),
        "before_pure_python_loader_s": round(before_s, 2), "after_load_config_s": round(after_s, 2),
        "speedup": round(before_s / after_s, 1), "cli_json_s": round(cli_json, 2),
        "cli_table_s": round(cli_table, 2), "json_loads_same_data_s": round(json_s, 2),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }  # fmt: skip
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "config_validate.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [f"# config validate, {args.rules:,} model rules ({size / 1e6:.1f} MB)", "",
          "| measure | CPU seconds (median) |", "| --- | --- |",
          f"| before: pure-Python YAML loader + validation (1 run) | {res['before_pure_python_loader_s']} |",
          f"| after: load_config (C loader + validation) | {res['after_load_config_s']} |",
          f"| after: `tritonops config validate -o json` (process) | {res['cli_json_s']} |",
          f"| after: `tritonops config validate` (table, process) | {res['cli_table_s']} |",
          f"| yardstick: json.loads of the same data | {res['json_loads_same_data_s']} |", "",
          f"Speedup of loading: {res['speedup']}x. Python {res['python']}, {res['cpus']} CPUs, "
          f"load average {res['load_average_1m']} at the end (a shared machine: compare ratios)."]  # fmt: skip
    (out / "config_validate.md").write_text("\n".join(md) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
