"""The metrics probe: parsing Triton's Prometheus text, and a real scrape of the local Triton."""

from __future__ import annotations

import psutil
import pytest

from tritonops.dev.stack import free_port
from tritonops.errors import MemoryProbeError
from tritonops.memory.probes import MetricsProbe, parse_prometheus

# As a GPU Triton serves it (trimmed): two GPUs and the host.
GPU_METRICS = """\
# HELP nv_gpu_memory_total_bytes GPU total memory, in bytes
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid="GPU-0f3c"} 85899345920
nv_gpu_memory_total_bytes{gpu_uuid="GPU-77aa"} 25769803776
# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{gpu_uuid="GPU-0f3c"} 1.2884901888e+10
nv_gpu_memory_used_bytes{gpu_uuid="GPU-77aa"} 536870912
nv_cpu_memory_total_bytes 270582939648
nv_cpu_memory_used_bytes 10737418240
nv_inference_count{model="m",version="1"} 3
"""


def test_parse_gpu_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    import tritonops.triton.client as client_mod

    monkeypatch.setattr(client_mod, "fetch_metrics", lambda url, timeout_s: GPU_METRICS)
    p = MetricsProbe("http://gpu-node:8002/metrics")
    devs = p.devices()
    assert [(d.device, d.kind, d.total_bytes, d.used_bytes, d.free_bytes) for d in devs] == [
        ("GPU-0f3c", "gpu", 80 << 30, 12 << 30, 68 << 30),
        ("GPU-77aa", "gpu", 24 << 30, 512 << 20, (24 << 30) - (512 << 20)),
        ("host", "host", 270582939648, 10 << 30, 270582939648 - (10 << 30)),
    ]
    # Footprints on a GPU server are GPU memory.
    assert p.usage() == {"GPU-0f3c": 12 << 30, "GPU-77aa": 512 << 20}
    assert p.device_type() == "gpu"
    assert ("nv_inference_count", {"model": "m", "version": "1"}, 3.0) in parse_prometheus(GPU_METRICS)


def test_real_scrape_reports_host_memory(dev_stack) -> None:
    server = dev_stack.config.region("us-east-1").servers[0]
    p = MetricsProbe(server.metrics_url)
    (host,) = p.devices()
    assert host.kind == "host"
    # Triton reads the same kernel counters psutil does.
    assert abs(host.total_bytes - psutil.virtual_memory().total) < 0.02 * host.total_bytes
    assert 0 < host.used_bytes < host.total_bytes
    assert p.device_type() == "cpu"


def test_unreachable_metrics_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(MemoryProbeError, match=rf"^metrics {url}: unreachable \(.*\)$"):
        MetricsProbe(url, timeout_s=2).devices()
    with pytest.raises(MemoryProbeError, match="no per-process memory"):
        MetricsProbe(url).process_bytes([1])


def test_waits_for_tritons_first_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    import tritonops.triton.client as client_mod

    # A just-started Triton serves zeros until its first poll.
    answers = ["nv_cpu_memory_total_bytes 0\nnv_cpu_memory_used_bytes 0\n"] * 2 + [GPU_METRICS]
    monkeypatch.setattr(
        client_mod, "fetch_metrics", lambda url, timeout_s: answers.pop(0) if len(answers) > 1 else answers[0]
    )
    devs = MetricsProbe("http://x/metrics").devices()
    assert [d.device for d in devs] == ["GPU-0f3c", "GPU-77aa", "host"]
