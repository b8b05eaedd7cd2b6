"""Latency and throughput of an ONNX file on onnxruntime (CPU here; CUDA when present)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tritonops.convert.export import example_feeds
from tritonops.convert.recipe import TensorSpec

WARMUP_RUNS = 5


def providers() -> list[str]:
    import onnxruntime as ort

    avail = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]


def measure(
    path: Any, specs: list[TensorSpec], batches: list[int], iterations: int, budget_s: float, threads: int = 1
) -> dict[str, Any]:
    """p50/p99 latency (ms) and throughput (samples/s at the p50) per batch size.

    Batches larger than a static batch dimension are skipped. Each batch size runs ``iterations``
    times or for ``budget_s`` seconds, whichever ends first, after a few warm-up runs.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    provs = providers()
    sess = ort.InferenceSession(str(path), so, providers=provs)
    result: dict[str, Any] = {"provider": sess.get_providers()[0], "threads": threads, "batches": {}}
    for b in batches:
        if any(0 not in s.dynamic_dims and s.shape[0] != b for s in specs):
            continue
        feeds = example_feeds(specs, b, seed=2)
        for _ in range(WARMUP_RUNS):
            sess.run(None, feeds)
        times: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(times) < iterations and (time.perf_counter() < deadline or len(times) < 5):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        arr = np.array(times)
        p50 = float(np.median(arr))
        result["batches"][str(b)] = {
            "p50_ms": round(p50 * 1e3, 4),
            "p99_ms": round(float(np.quantile(arr, 0.99)) * 1e3, 4),
            "throughput_per_s": round(b / p50, 1),
            "runs": len(times),
        }
    return result
