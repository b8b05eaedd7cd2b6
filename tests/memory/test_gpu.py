"""The NVML probe on a real GPU (skipped here: no GPU on this machine or in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check_nvml.py"


def _has_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount()) > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no library, no driver, no device: no GPU
        return False


@pytest.mark.gpu
def test_nvml_attributes_a_known_allocation_to_its_pid() -> None:
    if not _has_gpu():
        pytest.skip("no NVIDIA GPU")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--gib", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and abs(result["error_ratio"]) <= 0.05, result
