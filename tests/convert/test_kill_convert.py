"""SIGKILL during `tritonops convert` (a real subprocess, the iris example with four targets): whenever
it dies, the repository is either absent or valid, every model its index lists is complete, and a
rerun succeeds and leaves no staging folder behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.convert.conftest import copy_recipe
from tritonops.repo.repository import validate_repository

ROOT = Path(__file__).resolve().parents[2]
# The iris recipe's targets, each its own model: onnx, onnx-fp16, onnx-int8-dynamic, onnx-int8-static.
TARGETS = 4

pytestmark = pytest.mark.slow


def _convert(recipe: Path) -> list[str]:
    return [sys.executable, "-m", "tritonops", "convert", str(recipe)]


def _check(root: Path) -> None:
    if not root.exists():
        return  # killed before the first write: nothing was written
    assert validate_repository(root) == []
    index = root / "tritonops-index.json"
    if index.exists():
        for model in json.loads(index.read_bytes())["models"]:
            manifest = json.loads((root / model / "tritonops-manifest.json").read_bytes())
            for n, v in manifest["versions"].items():
                for rel, f in v["files"].items():
                    assert (root / model / n / rel).stat().st_size == f["size"]


# Seconds after start: before the export, during export/quantisation, during the speed runs and the writes.
@pytest.mark.parametrize("after_s", [0.5, 3.0, 6.0, 10.0])
def test_sigkill_during_convert_leaves_a_valid_repository(tmp_path: Path, after_s: float) -> None:
    recipe = copy_recipe("iris_sklearn", tmp_path / "recipes", "iris-kill")
    root = recipe.parent / "repo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_convert(recipe), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(after_s)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _check(root)

    rerun = subprocess.run(_convert(recipe), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    _check(root)
    assert list(root.glob(".tritonops-staging-*")) == []
    models = json.loads((root / "tritonops-index.json").read_bytes())["models"]
    assert len(models) == TARGETS, sorted(models)
    for model in models:
        versions = json.loads((root / model / "tritonops-manifest.json").read_bytes())["versions"]
        # The rerun's version, after at most one whole version from the killed run (never a partial one).
        assert len(versions) in ((1, 2) if not finished else (2,)), (model, sorted(versions))
