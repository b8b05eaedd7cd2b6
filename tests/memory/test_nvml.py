"""The NVML probe against a fake pynvml (no GPU here); scripts/gpu_check_nvml.py checks the real one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.memory.fake_nvml import (
    NVML_ERROR_LIBRARY_NOT_FOUND,
    FakeGpu,
    make_nvml,
)
from tritonops.errors import MemoryProbeError
from tritonops.memory.probes import HostProbe, MetricsProbe, NvmlProbe, probe_for_server

GIB = 1 << 30


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A real child of this process, standing in for a python-backend stub under tritonserver."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p
    p.kill()
    p.wait()


def test_devices_use_v2_memory_info() -> None:
    nv = make_nvml([FakeGpu("GPU-a", used=3 * GIB), FakeGpu("GPU-b", name="NVIDIA L4", total=24 * GIB)])
    devs = NvmlProbe(nvml_module=nv).devices()
    a, b = devs
    assert (a.device, a.kind, a.total_bytes, a.used_bytes, a.reserved_bytes) == (
        "GPU-a",
        "gpu",
        80 * GIB,
        3 * GIB,
        512 << 20,
    )
    assert a.free_bytes == 80 * GIB - 3 * GIB - (512 << 20)
    assert b.name == "NVIDIA L4" and b.total_bytes == 24 * GIB
    assert all(c[2] == 0x02000028 for c in nv.calls)


@pytest.mark.parametrize("kw", [{"v2": False}, {"version_kwarg": False}])
def test_falls_back_to_v1_memory_info(kw: dict[str, bool]) -> None:
    nv = make_nvml([FakeGpu("GPU-a", used=3 * GIB)], **kw)
    (d,) = NvmlProbe(nvml_module=nv).devices()
    # v1 has no separate reserved figure: it is inside used.
    assert d.used_bytes == 3 * GIB + (512 << 20) and d.reserved_bytes == 0
    assert d.used_bytes + d.free_bytes == d.total_bytes


def test_mig_instances_replace_their_parent() -> None:
    mig = [FakeGpu("MIG-0", total=10 * GIB, used=2 * GIB), None, FakeGpu("MIG-2", total=20 * GIB, used=GIB)]
    nv = make_nvml([FakeGpu("GPU-parent", mig=mig), FakeGpu("GPU-plain")])
    devs = NvmlProbe(nvml_module=nv).devices()
    assert [(d.device, d.total_bytes, d.used_bytes) for d in devs] == [
        ("MIG-0", 10 * GIB, 2 * GIB),
        ("MIG-2", 20 * GIB, GIB),
        ("GPU-plain", 80 * GIB, GIB),
    ]


def test_per_process_memory_of_the_triton_tree(child: subprocess.Popen[bytes]) -> None:
    me = os.getpid()
    other = 999_999_999  # not ours: someone else's job on the same GPU
    g0 = FakeGpu("GPU-a", processes={me: 2 * GIB, child.pid: GIB, other: 5 * GIB})
    g1 = FakeGpu("GPU-b", processes={other: 7 * GIB})
    nv = make_nvml([g0, g1])
    probe = NvmlProbe(pids=[me], nvml_module=nv)
    # The child (a stub process) is found through the process tree, the stranger is not counted.
    assert probe.usage() == {"GPU-a": 3 * GIB, "GPU-b": 0}
    assert probe.process_bytes([child.pid]) == GIB
    # Without pids the probe reports device-wide use.
    assert NvmlProbe(nvml_module=nv).usage() == {"GPU-a": GIB, "GPU-b": GIB}


def test_per_process_memory_not_available_is_a_clear_error() -> None:
    nv = make_nvml([FakeGpu("GPU-a", processes={os.getpid(): None})])
    with pytest.raises(MemoryProbeError, match=r"NVML: GPU 0: per-process memory of pid \d+ not available"):
        NvmlProbe(pids=[os.getpid()], nvml_module=nv).usage()


def test_lost_gpu_is_a_clear_error() -> None:
    gpus = [FakeGpu("GPU-a"), FakeGpu("GPU-b")]
    probe = NvmlProbe(nvml_module=make_nvml(gpus))
    assert len(probe.devices()) == 2
    gpus[1].lost = True  # falls off the bus between two readings
    with pytest.raises(MemoryProbeError, match=r"^NVML: GPU 1: GPU is lost$"):
        probe.devices()


def test_nvml_library_absent() -> None:
    nv = make_nvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(MemoryProbeError, match=r"^NVML unavailable: NVML Shared Library Not Found$"):
        NvmlProbe(nvml_module=nv)


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(MemoryProbeError, match=r"nvidia-ml-py \(pynvml\) is not installed"):
        NvmlProbe()


def test_without_nvml_falls_back_to_metrics_or_host(dev_stack) -> None:
    server = dev_stack.config.region("eu-west-1").servers[0]
    broken = make_nvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    # A local Triton without GPUs: the host probe (its process tree).
    p = probe_for_server(server.http_url, server.metrics_url, nvml_module=broken)
    assert isinstance(p, HostProbe) and p.usage()["host"] > 0
    # Forced to metrics: works from afar, host memory only (this Triton has no GPU metrics).
    m = probe_for_server(server.http_url, server.metrics_url, prefer="metrics")
    assert isinstance(m, MetricsProbe)
    assert [d.kind for d in m.devices()] == ["host"]
    # Forced to NVML: a clear error, no silent fallback.
    with pytest.raises(MemoryProbeError, match="NVML unavailable"):
        probe_for_server(server.http_url, server.metrics_url, prefer="nvml", nvml_module=broken)


def test_nvml_is_preferred_for_a_local_triton_with_gpus(dev_stack) -> None:
    server = dev_stack.config.region("eu-west-1").servers[0]
    pid = dev_stack.state.processes["triton-eu-west-1"].pid
    nv = make_nvml([FakeGpu("GPU-a", processes={pid: 4 * GIB})])
    p = probe_for_server(server.http_url, server.metrics_url, nvml_module=nv)
    assert isinstance(p, NvmlProbe)
    assert p.usage() == {"GPU-a": 4 * GIB}
