"""Benchmark: what each conversion target buys, per example recipe, on onnxruntime (CPU here).

For each example in converters/ and each target: file size, p50/p99 latency and throughput at
batch 1 and 32 (one intra-op thread, so figures compare on a shared machine), and the error
versus the source model. The baseline is what users would run instead: the source framework
itself (PyTorch eager / scikit-learn predict) on the same inputs and thread count.

    python bench/convert.py [--iterations N] [--budget-s S]

Writes bench/results/convert.json and bench/results/convert.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tritonops.convert import convert  # noqa: E402
from tritonops.convert.export import example_feeds, export, input_specs  # noqa: E402
from tritonops.convert.recipe import load_recipe  # noqa: E402
from tritonops.convert.speed import measure  # noqa: E402

EXAMPLES = ("mlp", "iris_sklearn")
BATCHES = [1, 32]
ANCHOR = 1.5  # int8 throughput / fp32 throughput for the MLP at batch 32, within tolerance


def source_speed(recipe_path: Path, iterations: int, budget_s: float) -> dict[str, Any]:
    """The source framework on the same inputs: what users would serve without converting."""
    import torch

    torch.set_num_threads(1)
    recipe = load_recipe(recipe_path)
    with tempfile.TemporaryDirectory() as tmp:
        exp = export(recipe, Path(tmp) / "m.onnx")
    specs = input_specs(recipe, exp)
    out: dict[str, Any] = {"framework": exp.info["source"], "threads": 1, "batches": {}}
    for b in BATCHES:
        feeds = example_feeds(specs, b, seed=2)
        for _ in range(5):
            exp.run_source(feeds)
        times: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(times) < iterations and (time.perf_counter() < deadline or len(times) < 5):
            t0 = time.perf_counter()
            exp.run_source(feeds)
            times.append(time.perf_counter() - t0)
        p50 = statistics.median(times)
        out["batches"][str(b)] = {
            "p50_ms": round(p50 * 1e3, 4),
            "throughput_per_s": round(b / p50, 1),
            "runs": len(times),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--budget-s", type=float, default=3.0)
    args = ap.parse_args()

    results: dict[str, Any] = {
        "iterations": args.iterations,
        "budget_s": args.budget_s,
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "platform": platform.platform(),
        },
        "examples": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        for ex in EXAMPLES:
            recipe = ROOT / "converters" / f"{ex}.yaml"
            t0 = time.perf_counter()
            report = convert([recipe], repo=Path(tmp) / "repo")
            convert_s = time.perf_counter() - t0
            rr = report.recipes[0]
            assert rr.exported is not None
            specs = input_specs(load_recipe(recipe), rr.exported)
            targets = {}
            for t in rr.targets:
                onnx_file = Path(tmp) / "repo" / t.model / str(t.version) / "model.onnx"
                sp = measure(onnx_file, specs, BATCHES, args.iterations, args.budget_s, threads=1)
                outs = t.accuracy["outputs"]
                float_outs = {k: v for k, v in outs.items() if k != "label"}
                targets[t.target] = {
                    "model": t.model,
                    "status": t.status.value,
                    "version": t.version,
                    "size_bytes": t.size_bytes,
                    "speed": sp,
                    "max_abs_error": max(v["max_abs"] for v in float_outs.values()),
                    "norm_max_error": max(v["norm_max"] for v in float_outs.values()),
                    "label_mismatch": outs["label"]["mismatch"] if "label" in outs else None,
                    "tolerance": t.tolerance,
                }
            fp32 = targets["onnx"]["speed"]["batches"]
            for tr in targets.values():
                tr["throughput_vs_fp32"] = {
                    b: round(tr["speed"]["batches"][b]["throughput_per_s"] / fp32[b]["throughput_per_s"], 2)
                    for b in fp32
                }
            src = source_speed(recipe, args.iterations, args.budget_s)
            for tr in targets.values():
                tr["throughput_vs_source"] = {
                    b: round(
                        tr["speed"]["batches"][b]["throughput_per_s"] / src["batches"][b]["throughput_per_s"],
                        2,
                    )
                    for b in src["batches"]
                }
            results["examples"][ex] = {
                "convert_seconds": round(convert_s, 1),
                "written": report.written,
                "source": src,
                "targets": targets,
            }

    mlp8 = results["examples"]["mlp"]["targets"]["onnx-int8-dynamic"]
    ratio = mlp8["throughput_vs_fp32"]["32"]
    results["anchor"] = {
        "what": "MLP int8 (dynamic) throughput / fp32 throughput at batch 32, within tolerance",
        "target": ANCHOR,
        "measured": ratio,
        "met": bool(ratio >= ANCHOR and mlp8["status"] == "written"),
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "convert.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "convert.md").write_text(render_md(results))
    print(render_md(results))
    return 0


def render_md(r: dict[str, Any]) -> str:
    lines = [
        "# bench/convert.py",
        "",
        f"onnxruntime CPU, 1 intra-op thread, p50 of up to {r['iterations']} runs "
        f"({r['budget_s']} s budget) per batch size. "
        "Error: versus the source model on the recipe's validation inputs; "
        "norm = max abs error / max |output|. The source baseline is the framework itself on 1 thread "
        "(scikit-learn: predict + predict_proba, since the ONNX graph returns both label and "
        "probabilities).",
        f"Machine: {r['machine']['platform']}, shared with other jobs "
        "(figures vary run to run; ratios less).",
        "",
    ]
    for ex, e in r["examples"].items():
        lines += [
            f"## {ex} (converted in {e['convert_seconds']} s)",
            "",
            "| target | size | p50 ms b1 | p50 ms b32 | samples/s b32 | x fp32 b32 | x source b32 "
            "| max abs err | norm err | status |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        s = e["source"]["batches"]
        lines.append(
            f"| source ({e['source']['framework']}) | - | {s['1']['p50_ms']:.4f} | {s['32']['p50_ms']:.4f} | "
            f"{s['32']['throughput_per_s']:,.0f} | - | 1.00 | 0 | 0 | - |"
        )
        for name, t in e["targets"].items():
            b = t["speed"]["batches"]
            lines.append(
                f"| {name} | {t['size_bytes'] / 1024:,.0f} KiB | {b['1']['p50_ms']:.4f} | "
                f"{b['32']['p50_ms']:.4f} | {b['32']['throughput_per_s']:,.0f} | "
                f"{t['throughput_vs_fp32']['32']:.2f} | {t['throughput_vs_source']['32']:.2f} | "
                f"{t['max_abs_error']:.2e} | {t['norm_max_error']:.2e} | {t['status']} |"
            )
        lines.append("")
    a = r["anchor"]
    lines += [
        f"Anchor: {a['what']}: target >= {a['target']}x, measured {a['measured']}x -> "
        f"{'met' if a['met'] else 'NOT met'}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
