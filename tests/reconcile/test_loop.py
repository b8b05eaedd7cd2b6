"""`tritonops reconcile --every`: one process, the region's lock held throughout, a clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonops.cli import app


def _config(tmp_path: Path) -> Path:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    cfg = tmp_path / "tritonops.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\nregions:\n  eu-west-1:\n    bucket: file://{bucket}\n")
    return cfg


def _start(cfg: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen(
        [sys.executable, "-m", "tritonops", "--config", str(cfg), "reconcile", "-r", "eu-west-1", "--every", "1s",
         "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_loop_runs_every_interval_holds_the_lock_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    cfg = _config(tmp_path)
    proc = _start(cfg)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        second = json.loads(proc.stdout.readline())
        assert first["region"] == second["region"] == "eu-west-1" and first["format_version"] == 1
        assert second["started"] - first["started"] >= 0.9  # one run per interval, not back to back
        # a cron run meanwhile finds the lock held: exit 3
        res = CliRunner().invoke(app, ["--config", str(cfg), "reconcile", "-r", "eu-west-1"])
        assert res.exit_code == 3 and "another reconcile holds" in res.stderr
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "loop stopped after" in err
    journal = (tmp_path / "state" / "reconcile" / "eu-west-1" / "journal.jsonl").read_text().splitlines()
    assert len(journal) >= 2
    # the lock is free again
    res = CliRunner().invoke(app, ["--config", str(cfg), "reconcile", "-r", "eu-west-1"])
    assert res.exit_code == 0, res.output


def test_every_rejects_a_bad_interval(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    for bad in ("soon", "0.5s"):
        res = CliRunner().invoke(app, ["--config", str(cfg), "reconcile", "-r", "eu-west-1", "--every", bad])
        assert res.exit_code == 2 and "--every" in res.output
