"""The footprint ledger on its own: keys, estimates, durability, concurrent writers, bad files."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from tritonops.errors import MemoryProbeError
from tritonops.memory.ledger import (
    ESTIMATE_BASE_BYTES,
    ESTIMATE_MULTIPLIER,
    FootprintKey,
    FootprintLedger,
    Prediction,
)

MIB = 1 << 20


def test_estimate_until_measured_then_measured_for_that_key_only(tmp_path: Path) -> None:
    led = FootprintLedger(tmp_path / "f.json")
    p = led.predict(FootprintKey("resnet", 3, "sha-a", "NVIDIA L4", "2.51.0"), size_bytes=100 * MIB)
    assert p == Prediction(int(100 * MIB * ESTIMATE_MULTIPLIER) + ESTIMATE_BASE_BYTES, "estimate")
    led.record(FootprintKey("resnet", 3, "sha-a", "NVIDIA L4", "2.51.0"), 700 * MIB, predicted=p, server="s0")
    assert led.predict(FootprintKey("resnet", 3, "sha-a", "NVIDIA L4", "2.51.0"), 100 * MIB) == Prediction(700 * MIB, "measured")
    # Different content, device type or Triton version: a different footprint, so back to the estimate.
    for other in (
        ("sha-b", "NVIDIA L4", "2.51.0"),
        ("sha-a", "NVIDIA H100", "2.51.0"),
        ("sha-a", "NVIDIA L4", "2.52.0"),
    ):
        assert led.predict(FootprintKey("resnet", 3, *other), size_bytes=100 * MIB).source == "estimate"
    # Content unknown (no manifest): the latest measurement of that model version on that device type.
    assert led.predict(FootprintKey("resnet", 3, None, "NVIDIA L4", "2.51.0")).bytes == 700 * MIB
    (row,) = led.load_history("resnet")
    assert row["measured_bytes"] == 700 * MIB and row["error_ratio"] == pytest.approx(
        (p.bytes - 700 * MIB) / (700 * MIB)
    )


def test_median_of_recent_samples(tmp_path: Path) -> None:
    led = FootprintLedger(tmp_path / "f.json")
    for b in (100, 102, 900, 101):  # one outlier (a neighbour's allocation during the measurement)
        led.record(FootprintKey("m", 1, "d", "cpu", "2.51.0"), b * MIB)
    assert led.predict(FootprintKey("m", 1, "d", "cpu", "2.51.0")).bytes == int(101.5 * MIB)


def test_server_records_and_leaks_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "footprints.json"
    led = FootprintLedger(path)
    led.record(FootprintKey("m", 2, "d", "cpu", "2.51.0"), 64 * MIB, server="eu-0", per_device_bytes={"host": 64 * MIB})
    led.record_leak("eu-0", "m", 3 * MIB)
    led.record_leak("eu-0", "m", 1 * MIB)
    again = FootprintLedger(path)
    assert again.server_footprint("eu-0", "m", 2) == 64 * MIB
    assert again.server_footprint("eu-0", "m", 1) is None
    assert again.leaked_bytes("eu-0") == 4 * MIB and again.leaked_bytes("us-0") == 0
    assert again.forget_load("eu-0", "m")["2"]["footprint_bytes"] == 64 * MIB
    assert FootprintLedger(path).server_footprint("eu-0", "m", 2) is None
    # Written atomically: no temporary files left behind beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["footprints.json", "footprints.json.lock"]


def _writer(path: str, n: int, tag: int) -> None:
    led = FootprintLedger(Path(path))
    for i in range(n):
        led.record(FootprintKey(f"m{tag}-{i}", 1, "d", "cpu", "2.51.0"), i + 1)


def test_concurrent_processes_lose_no_records(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), 25, t)) for t in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert len(json.loads(path.read_text())["footprints"]) == 100


def test_corrupt_or_foreign_ledger_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("{not json")
    with pytest.raises(MemoryProbeError, match=rf"^{path}: footprint ledger is not valid JSON"):
        FootprintLedger(path).predict(FootprintKey("m", 1, "d", "cpu", "x"))
    path.write_text('{"format_version": 99}')
    with pytest.raises(MemoryProbeError, match=rf"^{path}: format_version: unsupported 99$"):
        FootprintLedger(path).record(FootprintKey("m", 1, "d", "cpu", "x"), 1)
    assert path.read_text() == '{"format_version": 99}'  # nothing half-written over it


def _other_process_records(path: str) -> None:
    FootprintLedger(Path(path)).record(FootprintKey("m", 1, "d", "cpu", "2.51.0"), 300 * MIB)


def _other_instance_records(path: Path) -> None:
    FootprintLedger(path).record(FootprintKey("m", 1, "d", "cpu", "2.51.0"), 300 * MIB)


def _same_size_rewrite_with_old_mtime(path: Path) -> None:
    """Another writer replaces the file (as every ledger write does) with bytes of the same length, and
    sets the old modification time back."""
    st = path.stat()
    doc = json.loads(path.read_text())
    entry = next(iter(doc["footprints"].values()))
    entry["footprint_bytes"] = entry["samples"][0] = 300 * MIB  # 100 MiB and 300 MiB: same number of digits
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert len(text) == st.st_size
    tmp = path.with_name("rewrite.tmp")
    tmp.write_text(text)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def _fork_and_record(path: Path) -> None:
    p = multiprocessing.get_context("fork").Process(target=_other_process_records, args=(str(path),))
    p.start()
    p.join(60)
    assert p.exitcode == 0


@pytest.mark.parametrize(
    "write",
    [
        lambda led, path: led.record(FootprintKey("m", 1, "d", "cpu", "2.51.0"), 300 * MIB),
        lambda led, path: _other_instance_records(path),
        lambda led, path: _fork_and_record(path),
        lambda led, path: _same_size_rewrite_with_old_mtime(path),
    ],
    ids=["own-write", "another-ledger-object", "another-process", "same-size-old-mtime-replace"],
)
def test_a_reader_that_parsed_the_ledger_once_sees_every_later_write(tmp_path: Path, write: Any) -> None:
    """Predictions reuse the parsed ledger while the file is unchanged: a write by anyone must still
    show in the next prediction."""
    path = tmp_path / "f.json"
    led = FootprintLedger(path)
    led.record(FootprintKey("m", 1, "d", "cpu", "2.51.0"), 100 * MIB)
    assert led.predict(FootprintKey("m", 1, "d", "cpu", "2.51.0")) == Prediction(100 * MIB, "measured")
    assert led.predict(FootprintKey("m", None, "d", "cpu", "2.51.0")).bytes == 100 * MIB  # the by-model path, cached too
    write(led, path)
    assert led.predict(FootprintKey("m", 1, "d", "cpu", "2.51.0")).bytes in (300 * MIB, 200 * MIB)  # 200: median of two
    assert led.predict(FootprintKey("m", None, "d", "cpu", "2.51.0")).bytes in (300 * MIB, 200 * MIB)
    assert led.measured(FootprintKey("m", 1, "d", "cpu", "2.51.0")) in (300 * MIB, 200 * MIB)


def test_a_ledger_damaged_after_it_was_read_is_still_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    led = FootprintLedger(path)
    led.record(FootprintKey("m", 1, "d", "cpu", "2.51.0"), 100 * MIB)
    assert led.predict(FootprintKey("m", 1, "d", "cpu", "2.51.0")).bytes == 100 * MIB
    path.write_text("{not json")
    with pytest.raises(MemoryProbeError, match=rf"^{path}: footprint ledger is not valid JSON"):
        led.predict(FootprintKey("m", 1, "d", "cpu", "2.51.0"))
    path.unlink()
    assert led.predict(FootprintKey("m", 1, "d", "cpu", "2.51.0")).source == "estimate"
