"""Quarantine, lock, journal and metrics: local state that makes reconcile safe to run from cron."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tritonops.errors import LockHeldError
from tritonops.reconcile.lock import region_lock
from tritonops.reconcile.metrics import render
from tritonops.reconcile.records import Journal, Owned, Quarantine


def test_three_failures_within_the_window_quarantine_until_expiry(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "q.json", failures=3, window_s=900)
    assert q.record_failure("s1", "m", 3, "d3", "boom", now=1000) is False
    assert q.record_failure("s1", "m", 3, "d3", "boom", now=1100) is False
    assert q.keys(now=1100) == set()
    assert q.record_failure("s1", "m", 3, "d3", "boom", now=1200) is True
    assert q.keys(now=1300) == {("s1", "m", "d3")}
    assert q.active(now=1300)[0]["until"] == 1200 + 900
    # a new digest of the same model is not quarantined; expiry lifts it
    assert ("s1", "m", "d4") not in q.keys(now=1300)
    # it lasts the window after the failure that tripped it, even once earlier failures age out
    assert q.keys(now=1000 + 900 + 1) == {("s1", "m", "d3")}
    assert q.keys(now=1200 + 900) == set()


def test_failures_spread_beyond_the_window_do_not_quarantine(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "q.json", failures=3, window_s=900)
    for t in (0, 1000, 2000):
        assert q.record_failure("s1", "m", 1, "d", "x", now=t) is False


def test_success_clears_failures(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "q.json", failures=2, window_s=900)
    q.record_failure("s1", "m", 1, "d", "x", now=0)
    q.clear("s1", "m", "d")
    assert q.record_failure("s1", "m", 1, "d", "x", now=1) is False


def test_corrupt_state_files_do_not_stop_reconcile(tmp_path: Path) -> None:
    (tmp_path / "q.json").write_text("{not json")
    (tmp_path / "owned.json").write_text("[")
    assert Quarantine(tmp_path / "q.json").keys() == set()
    assert Owned(tmp_path / "owned.json").get() == set()


def test_lock_held_by_another_process_raises_exit_code_3(tmp_path: Path) -> None:
    lock = tmp_path / "r.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT);"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242'); print('held', flush=True); time.sleep(30)",
         str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=r"region 'r1'.*pid 4242") as e, region_lock(lock, "r1"):
            pass
        assert e.value.exit_code == 3
    finally:
        holder.kill()
        holder.wait()
    with region_lock(lock, "r1"):  # released when its holder died
        pass


def test_journal_appends_one_line_per_run(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.jsonl")
    j.append({"plan_digest": "a"})
    j.append({"plan_digest": "b"})
    assert [r["plan_digest"] for r in j.records()] == ["a", "b"]


def test_metrics_text_has_actions_by_kind_and_result_and_memory() -> None:
    report = {
        "region": "eu-west-1", "finished": 1700000000.0, "failed": 1, "drift": 2, "skipped_servers": [],
        "quarantined": [{"model": "m"}],
        "results": [
            {"kind": "load", "result": "ok", "server": "s1", "model": "a", "duration_s": 1.5,
             "prediction_error_bytes": -1024},
            {"kind": "load", "result": "failed", "server": "s1", "model": "b", "duration_s": 0.5,
             "prediction_error_bytes": None},
        ],
        "memory": [{"server": "s1", "device": "gpu0", "used_bytes": 10, "free_bytes": 90}],
    }  # fmt: skip
    text = render(report)
    assert 'tritonops_reconcile_actions{kind="load",region="eu-west-1",result="failed"} 1' in text
    assert 'tritonops_reconcile_actions{kind="load",region="eu-west-1",result="ok"} 1' in text
    assert 'tritonops_device_memory_free_bytes{device="gpu0",region="eu-west-1",server="s1"} 90' in text
    assert 'tritonops_memory_prediction_error_bytes{model="a",region="eu-west-1",server="s1"} -1024' in text
    assert 'tritonops_reconcile_last_run_success{region="eu-west-1"} 0' in text
    failed = 'tritonops_reconcile_failed_action{kind="load",model="b",region="eu-west-1",result="failed",server="s1",'
    assert failed in text
    assert 'tritonops_reconcile_degraded{region="eu-west-1"} 0' in text  # a report without the field
    assert 'tritonops_reconcile_unmeasured_loads{region="eu-west-1"} 0' in text  # results without the field
    assert text.count("# TYPE") == 15


def test_metrics_text_has_each_load_held_at_an_estimate() -> None:
    """A load that serves but could not be measured: one sample per load (its estimate), and a count."""
    report = {
        "region": "eu-west-1", "finished": 1700000000.0, "failed": 0, "drift": 0, "skipped_servers": [],
        "quarantined": [], "memory": [],
        "results": [
            {"kind": "load", "result": "ok", "server": "s1", "model": "a", "version": 3, "duration_s": 1.0,
             "prediction_error_bytes": None, "footprint_source": "estimate", "estimate_bytes": 201326592},
            {"kind": "load", "result": "ok", "server": "s1", "model": "b", "version": 1, "duration_s": 1.0,
             "prediction_error_bytes": 0, "footprint_source": "measured", "estimate_bytes": None},
        ],
    }  # fmt: skip
    text = render(report)
    held = 'tritonops_reconcile_unmeasured_load_bytes{model="a",region="eu-west-1",server="s1",version="3"} 201326592'
    assert held in text
    assert 'model="b"' not in text.split("# TYPE tritonops_reconcile_unmeasured_load_bytes gauge\n", 1)[1].split("#")[0]
    assert 'tritonops_reconcile_unmeasured_loads{region="eu-west-1"} 1' in text
    assert 'tritonops_reconcile_last_run_success{region="eu-west-1"} 1' in text
    # Values are exact: bytes and timestamps as integers, durations as they are.
    assert 'tritonops_reconcile_last_run_timestamp_seconds{region="eu-west-1"} 1700000000' in text
    assert 'tritonops_reconcile_load_duration_seconds{model="a",region="eu-west-1",server="s1"} 1\n' in text
