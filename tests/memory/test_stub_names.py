"""A python model's stubs are found by the instance names Triton gives them (from the config it serves),
whatever shape its instance groups take: named, several, counted, left to Triton, or overridden at load."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.memory.models import ALLOC_MODEL_PY, MIB
from tritonops.errors import MemoryProbeError
from tritonops.memory.host_probe import StubNames, served_stub_names
from tritonops.memory.ledger import FootprintKey, FootprintLedger
from tritonops.memory.loads import measured_load
from tritonops.memory.probes import HostProbe
from tritonops.store.s3 import s3_client
from tritonops.triton.client import ControlClient

REGION = "eu-west-1"
ALLOC_MIB = 48
# A stub with numpy imported costs about 37 MiB before the model allocates anything; room for noise.
STUB_MAX_BYTES = 160 * MIB

IO = [
    {"name": "X", "data_type": "TYPE_FP32", "dims": [2]},
    {"name": "Y", "data_type": "TYPE_FP32", "dims": [2]},
]


def config(groups: list[dict[str, object]] | None) -> dict[str, object]:
    c: dict[str, object] = {
        "backend": "python", "max_batch_size": 4, "input": [IO[0]], "output": [IO[1]],
        "parameters": {"alloc_mib": {"string_value": str(ALLOC_MIB)}},
    }  # fmt: skip
    if groups is not None:
        c["instance_group"] = groups
    return c


# (label, the instance_group the config asks for, how many stubs Triton starts)
SHAPES = [
    ("named", [{"name": "cpu_pool", "kind": "KIND_CPU", "count": 2}], 2),
    ("several", [{"kind": "KIND_CPU", "count": 2}, {"name": "b", "kind": "KIND_CPU", "count": 1}], 3),
    ("counted", [{"kind": "KIND_CPU", "count": 3}], 3),
    ("default", None, 1),  # no instance_group: Triton adds one named after the model
]


def test_stub_names_from_served_configs() -> None:
    """What Triton serves names every group; a lone instance may carry the bare group name (older Tritons)."""
    two = StubNames.from_config({"instance_group": [{"name": "cpu_pool", "kind": "KIND_CPU", "count": 2}]})
    assert two == StubNames(frozenset({"cpu_pool_0", "cpu_pool_1"}), 2)
    one = StubNames.from_config({"instance_group": [{"name": "m", "kind": "KIND_CPU", "count": 1}]})
    assert one == StubNames(frozenset({"m_0", "m"}), 1)
    gpu = StubNames.from_config({"instance_group": [{"name": "g", "kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}]})
    assert gpu is not None and gpu.expected == 4 and gpu.names == {"g_0", "g_1"}
    assert StubNames.from_config({"instance_group": []}) is None
    assert StubNames.from_config({}) is None


def publish(dev_stack, model: str) -> None:
    region = dev_stack.config.region(REGION)
    base = f"{region.prefix}/{model}" if region.prefix else model
    s3 = s3_client(region)
    s3.put_object(Bucket=region.bucket_name, Key=f"{base}/1/model.py", Body=ALLOC_MODEL_PY.encode())
    s3.put_object(Bucket=region.bucket_name, Key=f"{base}/config.pbtxt", Body=b'backend: "python"\n')


@pytest.mark.slow
def test_every_instance_group_shape_is_measured_from_its_own_stubs(
    dev_stack, fresh_triton, unique: Callable[[str], str], tmp_path
) -> None:
    t = fresh_triton(REGION)
    client = ControlClient.connect(t.http_url)
    probe = HostProbe(t.record.pid)
    ledger = FootprintLedger(tmp_path / "footprints.json")
    for label, groups, stubs in SHAPES:
        model = unique(label)
        publish(dev_stack, model)
        res = measured_load(client, probe, ledger, model, version=1, digest=label, size_bytes=1000,
                            config=json.dumps(config(groups)))  # fmt: skip
        names = served_stub_names(client, model, 1)
        assert names is not None and names.expected == stubs, (label, names)
        found = probe.stub_processes(model, names)
        assert len(found) == stubs, (label, [p.cmdline()[-2] for p in found])
        # Each instance allocates ALLOC_MIB in a stub of its own: the footprint is all of them, no other's.
        assert stubs * ALLOC_MIB * MIB < res.footprint_bytes < stubs * STUB_MAX_BYTES, (label, res.footprint_bytes)
        assert ledger.measured(FootprintKey(model, 1, label, "cpu", client.triton_version())) == res.footprint_bytes

    # A load-time override renames the group: the new names are what Triton serves, and are found.
    model = unique("override")
    publish(dev_stack, model)
    renamed = config([{"name": "ovr", "kind": "KIND_CPU", "count": 2}])
    res = measured_load(client, probe, ledger, model, version=1, digest="override", size_bytes=1000,
                        config=json.dumps(renamed))  # fmt: skip
    names = served_stub_names(client, model, 1)
    assert names is not None and names.names == {"ovr_0", "ovr_1"}
    assert 2 * ALLOC_MIB * MIB < res.footprint_bytes < 2 * STUB_MAX_BYTES


@pytest.mark.slow
def test_same_instance_names_in_two_models_are_told_apart_or_reported(
    dev_stack, fresh_triton, unique: Callable[[str], str]
) -> None:
    """Two models naming their group alike: the stubs a load started are its own (those not running
    before it); asked without that, stubs that cannot be told apart are a one-line error naming the
    model, never a guess."""
    t = fresh_triton(REGION)
    client = ControlClient.connect(t.http_url)
    probe = HostProbe(t.record.pid)
    same = [{"name": "pool", "kind": "KIND_CPU", "count": 1}]
    first, second = unique("first"), unique("second")
    for m in (first, second):
        publish(dev_stack, m)
    client.load(first, config=json.dumps(config(same)))
    earlier = probe.stub_pids()
    client.load(second, config=json.dumps(config(same)))
    names = served_stub_names(client, second, 1)
    assert names is not None
    assert len(probe.stub_processes(second, names, earlier)) == 1
    with pytest.raises(MemoryProbeError, match=first) as ei:
        probe.stub_processes(first, names)
    assert "cannot be told apart" in str(ei.value) and "\n" not in str(ei.value)
