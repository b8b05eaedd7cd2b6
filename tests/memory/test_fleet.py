"""Footprints shared through a region's bucket (a real file:// store and the real S3 server), and the
device lock that lets loads of known footprints run beside each other but keeps a measurement alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tritonops.memory.fleet import PREFIX, FleetFootprints
from tritonops.memory.ledger import FootprintKey, FootprintLedger
from tritonops.memory.loads import device_locks
from tritonops.store import open_store
from tritonops.store.local import FileStore

MIB = 1 << 20


def _record(ledger: FootprintLedger, model: str, footprint: int, server: str = "s1") -> None:
    ledger.record(FootprintKey(model, 1, f"sha-{model}", "cpu", "2.50.0"), footprint, server=server, size_bytes=100)


def test_measured_once_then_known_on_every_host_without_losing_a_record(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bucket")
    store.create()
    hosts = [FootprintLedger(tmp_path / f"host{i}" / "footprints.json") for i in range(3)]
    for h in hosts:
        assert FleetFootprints(store).attach(h) == 0

    # Three hosts measure different models at the same time (and two measure the same one).
    jobs = [(hosts[i % 3], f"m{i}", (70 + i) * MIB) for i in range(12)] + [(hosts[1], "m0", 72 * MIB)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: _record(*j), jobs))
    assert len(store.list(PREFIX)) == 13  # one object per measurement: nothing overwritten

    fresh = FootprintLedger(tmp_path / "host9" / "footprints.json")
    assert FleetFootprints(store).attach(fresh) == 13
    for i in range(1, 12):
        assert fresh.measured(FootprintKey(f"m{i}", 1, f"sha-m{i}", "cpu", "2.50.0")) == (70 + i) * MIB
    assert fresh.measured(FootprintKey("m0", 1, "sha-m0", "cpu", "2.50.0")) == 71 * MIB  # median of 70 and 72
    # pulled once: a second pull reads nothing, and a host never re-imports its own measurements
    assert FleetFootprints(store).pull(fresh) == 0
    assert FleetFootprints(store).pull(hosts[0]) == 9  # the 13 less the 4 it measured itself
    assert hosts[0].measured(FootprintKey("m1", 1, "sha-m1", "cpu", "2.50.0")) == 71 * MIB
    assert FleetFootprints(store).pull(hosts[0]) == 0
    # another device type or Triton version is a different key: not known there
    assert fresh.measured(FootprintKey("m1", 1, "sha-m1", "NVIDIA H100", "2.50.0")) is None
    assert fresh.measured(FootprintKey("m1", 1, "sha-m1", "cpu", "2.51.0")) is None


def test_a_malformed_object_is_ignored_once(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bucket")
    store.create()
    store.put_bytes(f"{PREFIX}bad.json", b"{not json", "0" * 64)
    store.put_bytes(f"{PREFIX}neg.json", b'{"model": "m", "footprint_bytes": -1}', "0" * 64)
    ledger = FootprintLedger(tmp_path / "footprints.json")
    assert FleetFootprints(store).attach(ledger) == 0
    assert ledger.imported() == {f"{PREFIX}bad.json", f"{PREFIX}neg.json"}
    assert ledger.data()["footprints"] == {}


def test_shared_through_the_real_s3_server(dev_stack, tmp_path: Path, unique) -> None:
    region = dev_stack.config.region("eu-west-1")
    store = open_store(region, "eu-west-1")
    a = FootprintLedger(tmp_path / "a.json")
    b = FootprintLedger(tmp_path / "b.json")
    FleetFootprints(store).attach(a)
    FleetFootprints(store).attach(b)
    model = unique("shared")
    _record(a, model, 77 * MIB)
    assert b.measured(FootprintKey(model, 1, f"sha-{model}", "cpu", "2.50.0")) is None
    assert FleetFootprints(store).pull(b) >= 1
    assert b.measured(FootprintKey(model, 1, f"sha-{model}", "cpu", "2.50.0")) == 77 * MIB


def test_device_lock_shares_known_loads_and_isolates_a_measurement() -> None:
    active: list[str] = []
    peak = {"shared": 0, "mixed": False}
    guard = threading.Lock()

    def run(kind: str) -> None:
        with device_locks("srv-lock-test", ["host"], shared=kind == "known"):
            with guard:
                active.append(kind)
                if "measure" in active and len(active) > 1:
                    peak["mixed"] = True
                peak["shared"] = max(peak["shared"], active.count("known"))
            time.sleep(0.05)
            with guard:
                active.remove(kind)

    kinds = ["known"] * 6 + ["measure"] + ["known"] * 6 + ["measure"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, kinds))
    assert peak["shared"] >= 2  # known loads ran beside each other
    assert peak["mixed"] is False  # a measurement never overlapped anything
