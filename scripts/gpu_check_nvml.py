#!/usr/bin/env python3
"""Check the NVML probe on a real GPU: allocate a known amount and see it attributed to this pid.

    python scripts/gpu_check_nvml.py [--gib 2] [--device 0]

Initialises CUDA (torch, else cupy), reads the probe's per-process GPU memory for this pid,
allocates --gib GiB (written, so it is really backed), reads again, and checks the increase is
within 5% of the allocation. Prints one JSON object on stdout. Exit 0: pass, 1: fail,
2: no NVIDIA GPU (or no CUDA array library) here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonops.errors import MemoryProbeError  # noqa: E402
from tritonops.memory.probes import NvmlProbe  # noqa: E402

TOLERANCE = 0.05


def _allocator(device: int) -> tuple[str, Any, Any]:
    """(library name, alloc(nbytes) -> handle, sync()) for torch.cuda, else cupy."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(device)
            torch.zeros(1, device="cuda")  # create the context before the baseline reading

            def alloc(n: int) -> Any:
                t = torch.empty(n, dtype=torch.uint8, device="cuda")
                t.fill_(1)
                return t

            return "torch", alloc, torch.cuda.synchronize
    except ImportError:
        pass
    try:
        import cupy

        cupy.cuda.Device(device).use()
        cupy.zeros(1)
        # Bypass cupy's pool so the allocation is a real cudaMalloc of exactly the asked size.
        cupy.cuda.set_allocator(None)

        def alloc_cp(n: int) -> Any:
            a = cupy.empty(n, dtype=cupy.uint8)
            a.fill(1)
            return a

        return "cupy", alloc_cp, cupy.cuda.runtime.deviceSynchronize
    except ImportError:
        pass
    raise RuntimeError("neither torch with CUDA nor cupy is available")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0, help="GiB to allocate (default 2)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    args = ap.parse_args()
    pid = os.getpid()
    try:
        probe = NvmlProbe(pids=[pid])
        devices = probe.devices()
    except MemoryProbeError as e:
        print(json.dumps({"ok": False, "skipped": True, "reason": f"no NVIDIA GPU: {e}"}))
        return 2
    if not devices:
        print(json.dumps({"ok": False, "skipped": True, "reason": "no NVIDIA GPU: NVML lists none"}))
        return 2
    try:
        lib, alloc, sync = _allocator(args.device)
    except RuntimeError as e:
        print(json.dumps({"ok": False, "skipped": True, "reason": str(e)}))
        return 2
    nbytes = int(args.gib * (1 << 30))
    sync()
    time.sleep(0.5)
    before = probe.process_bytes([pid])
    dev_before = {d.device: d.used_bytes for d in probe.devices()}
    block = alloc(nbytes)
    sync()
    time.sleep(0.5)
    after = probe.process_bytes([pid])
    dev_after = {d.device: d.used_bytes for d in probe.devices()}
    attributed = after - before
    error = (attributed - nbytes) / nbytes
    result = {
        "ok": abs(error) <= TOLERANCE,
        "library": lib,
        "pid": pid,
        "allocated_bytes": nbytes,
        "process_bytes_before": before,
        "process_bytes_after": after,
        "attributed_bytes": attributed,
        "error_ratio": round(error, 4),
        "tolerance": TOLERANCE,
        "device_used_delta_bytes": {d: dev_after[d] - dev_before.get(d, 0) for d in dev_after},
        "devices": [d.to_json() for d in probe.devices()],
    }
    del block
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
