"""Writes mlp_calib.npz: 64 deterministic samples in mlp.yaml's input range, for int8 calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

if __name__ == "__main__":
    rng = np.random.default_rng(1234)
    x = rng.uniform(-1.0, 1.0, size=(64, 512)).astype(np.float32)
    out = Path(__file__).parent / "mlp_calib.npz"
    np.savez_compressed(out, x=x)
    print(f"wrote {out} ({len(x)} samples)")
