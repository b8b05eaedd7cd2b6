"""Measured footprints against a real Triton (its own fresh server, so nothing else pollutes memory)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.memory.models import MIB, publish_alloc_model
from tritonops.errors import MemoryProbeError
from tritonops.memory.ledger import FootprintKey, FootprintLedger
from tritonops.memory.loads import measured_load, measured_unload
from tritonops.memory.probes import HostProbe, StubUsage
from tritonops.triton.client import ControlClient

REGION = "eu-west-1"


def test_footprints_match_allocations_unload_waits_and_ledger_predicts(
    dev_stack, fresh_triton, unique: Callable[[str], str], tmp_path: Path
) -> None:
    region = dev_stack.config.region(REGION)
    t = fresh_triton(REGION)
    client = ControlClient.connect(t.http_url)
    probe = HostProbe(t.record.pid)
    ledger_path = tmp_path / "footprints.json"
    ledger = FootprintLedger(ledger_path)

    footprints: dict[int, int] = {}
    names: dict[int, str] = {}
    for mib in (0, 64, 128, 256):
        names[mib] = unique(f"alloc{mib}")
        publish_alloc_model(region, names[mib], mib)
        baseline = probe.usage()["host"]
        res = measured_load(client, probe, ledger, names[mib], digest=f"test-{mib}", size_bytes=2000)
        assert res.version == 1 and res.predicted.source == "estimate"
        footprints[mib] = res.footprint_bytes
        # unload(wait=True) returns only once the stub's memory is back: check right on return.
        ures = measured_unload(client, probe, ledger, names[mib])
        after = probe.usage()["host"]
        assert client.loaded_versions(names[mib]) == []
        assert after - baseline < 4 * MIB, (mib, after - baseline)
        assert ures.released_bytes > 0.9 * res.footprint_bytes

    # Each python model costs its stub's baseline plus what it allocates: the baseline is real and positive.
    stub_baseline = footprints[0]
    assert 5 * MIB < stub_baseline < 200 * MIB, stub_baseline
    for a, b in ((64, 128), (128, 256), (64, 256)):
        diff = footprints[b] - footprints[a]
        expected = (b - a) * MIB
        assert abs(diff - expected) <= 0.10 * expected, (a, b, diff / MIB)

    # A second measured load of the same version is predicted from the first, within 5%.
    again = measured_load(client, probe, ledger, names[128], digest="test-128", size_bytes=2000)
    assert again.predicted.source == "measured"
    assert abs(again.predicted.bytes - again.footprint_bytes) <= 0.05 * again.footprint_bytes
    measured_unload(client, probe, ledger, names[128])

    # The ledger survives a restart: a new object over the same file predicts the same.
    reopened = FootprintLedger(ledger_path)
    version = client.triton_version()
    p = reopened.predict(FootprintKey(names[256], 1, "test-256", "cpu", version))
    assert p.source == "measured" and p.bytes == footprints[256]
    assert len(reopened.load_history()) == 5
    assert reopened.leaked_bytes(client.name) == 0


def test_concurrent_measured_loads_are_serialised_and_joined(
    dev_stack, fresh_triton, unique: Callable[[str], str], tmp_path: Path
) -> None:
    region = dev_stack.config.region(REGION)
    t = fresh_triton(REGION)
    client = ControlClient.connect(t.http_url)
    probe = HostProbe(t.record.pid)
    ledger = FootprintLedger(tmp_path / "footprints.json")
    small, big = unique("alloc64"), unique("alloc192")
    publish_alloc_model(region, small, 64)
    publish_alloc_model(region, big, 192)

    results: dict[str, object] = {}

    def run(tag: str, model: str) -> None:
        results[tag] = measured_load(client, probe, ledger, model)

    # Two different models at once: serialised per device, so neither measurement includes the other.
    threads = [threading.Thread(target=run, args=(n, n)) for n in (small, big)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    diff = results[big].footprint_bytes - results[small].footprint_bytes  # type: ignore[attr-defined]
    assert abs(diff - 128 * MIB) <= 0.10 * 128 * MIB, diff / MIB
    measured_unload(client, probe, ledger, small)
    measured_unload(client, probe, ledger, big)

    same = unique("alloc32")
    publish_alloc_model(region, same, 32)
    joined: list[object] = []

    def run_same() -> None:
        joined.append(measured_load(client, probe, ledger, same))

    threads = [threading.Thread(target=run_same) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(joined) == 3
    assert sum(1 for r in joined if not r.joined) == 1  # type: ignore[attr-defined]
    log_text = Path(t.record.log).read_text()
    assert log_text.count(f"successfully loaded '{same}'") == 1, log_text[-2000:]


def test_reload_is_not_recorded_and_a_leak_is_accounted(
    dev_stack, fresh_triton, unique: Callable[[str], str], tmp_path: Path
) -> None:
    import pytest

    from tritonops.triton.client import UnloadTimeout

    region = dev_stack.config.region(REGION)
    t = fresh_triton(REGION)
    client = ControlClient.connect(t.http_url)
    probe = HostProbe(t.record.pid)
    ledger = FootprintLedger(tmp_path / "footprints.json")
    model = unique("alloc64")
    publish_alloc_model(region, model, 64)
    first = measured_load(client, probe, ledger, model, digest="d")
    assert first.measured and first.footprint_bytes > 64 * MIB

    # Loading a loaded model reloads it (old instance out, new in): the near-zero difference would
    # poison the ledger, so it is not recorded.
    again = measured_load(client, probe, ledger, model, digest="d")
    assert not again.measured and again.error_ratio is None
    assert [r["measured_bytes"] for r in ledger.load_history(model)] == [first.footprint_bytes]

    # Suppose the load had taken 100 MiB more than comes back on unload (a leak): the wait gives up
    # at its timeout, says so, and the missing bytes are charged to the server.
    led = ledger.data()
    led["servers"][client.name][model]["1"]["footprint_bytes"] += 100 * MIB
    (tmp_path / "footprints.json").write_text(__import__("json").dumps(led))
    with pytest.raises(UnloadTimeout) as ei:
        measured_unload(client, probe, ledger, model, timeout_s=4)
    assert not ei.value.still_loaded and "memory not back" in str(ei.value)
    leaked = ledger.leaked_bytes(client.name)
    assert abs(leaked - 100 * MIB) < 8 * MIB, leaked / MIB
    assert ledger.server_footprint(client.name, model, 1) is None


def test_stub_usage_follows_its_own_stub_across_unload_and_reload(
    dev_stack, fresh_triton, unique: Callable[[str], str]
) -> None:
    """StubUsage finds a model's stub once and then reads it directly; when that stub exits it looks
    again: none (unloaded) is a one-line error naming the model, a new one (reloaded) is found."""
    region = dev_stack.config.region(REGION)
    t = fresh_triton(REGION)
    client = ControlClient.connect(t.http_url)
    probe = HostProbe(t.record.pid)
    small, big = unique("stub64"), unique("stub192")
    publish_alloc_model(region, small, 64)
    publish_alloc_model(region, big, 192)
    client.load(small)
    client.load(big)
    a, b = StubUsage(probe, small), StubUsage(probe, big)
    first = a.usage()["host"]
    assert 64 * MIB < first < b.usage()["host"] - 100 * MIB  # each reads its own stub, not the other's
    assert abs(a.usage()["host"] - first) < 8 * MIB  # read again: the same process
    client.unload(small, wait=True)
    with pytest.raises(MemoryProbeError, match=small):
        a.usage()
    client.load(small)
    assert 64 * MIB < a.usage()["host"] < 64 * MIB + 200 * MIB
