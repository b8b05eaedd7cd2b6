"""SIGKILL during `tritonops repo add` (a real subprocess, a 48 MiB source file): whenever it dies,
the repository still validates, its index is either unchanged or describes the complete new
version, and a rerun succeeds (and sweeps the dead writer's staging folder).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.badinput.harness import invoke
from tests.repo.conftest import make_python_model, python_config
from tritonops.repo.repository import validate_repository

SIZE = 48 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def _staging(root: Path) -> list[Path]:
    return list(root.glob(".tritonops-staging-*"))


def _staged_bytes(root: Path) -> int:
    return sum(p.stat().st_size for s in _staging(root) for p in s.rglob("weights.bin") if p.is_file())


# When to kill: a delay, or a condition polled every millisecond.
POINTS: list[tuple[str, Callable[[Path], bool] | float]] = [
    ("staging-created", lambda r: bool(_staging(r))),
    ("copy-started", lambda r: _staged_bytes(r) > 0),
    ("copy-half-done", lambda r: _staged_bytes(r) >= SIZE // 2),
    ("copy-done", lambda r: _staged_bytes(r) >= SIZE),
    ("t+0.2s", 0.2),
    ("t+0.8s", 0.8),
    ("t+1.5s", 1.5),
]


@pytest.mark.parametrize("point", [p[1] for p in POINTS], ids=[p[0] for p in POINTS])
def test_sigkill_during_repo_add_leaves_a_valid_repository(tmp_path: Path, point: Callable[[Path], bool] | float) -> None:
    root = tmp_path / "repo"
    cfg = python_config(tmp_path / "c.pbtxt")
    assert invoke(["repo", "add", "m", "--from", str(make_python_model(tmp_path / "v1")), "--config", str(cfg),
                   "--repo", str(root)]).exit_code == 0  # fmt: skip
    index_before = (root / "tritonops-index.json").read_bytes()
    src = make_python_model(tmp_path / "v2")
    with open(src / "weights.bin", "wb") as f:
        for i in range(SIZE // (1024 * 1024)):
            f.write(bytes([i % 251]) * (1024 * 1024))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "tritonops", "repo", "add", "m", "--from", str(src), "--repo", str(root)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    if isinstance(point, float):
        time.sleep(point)
    else:
        while not point(root) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert validate_repository(root) == []
    index_after = (root / "tritonops-index.json").read_bytes()
    if index_after != index_before:  # it finished before the kill: then version 2 is whole
        assert b'"2"' in index_after and (root / "m" / "2" / "weights.bin").stat().st_size == SIZE

    res = invoke(["repo", "add", "m", "--from", str(src), "--repo", str(root)])
    assert res.exit_code == 0, res.output
    assert validate_repository(root) == []
    assert _staging(root) == []
