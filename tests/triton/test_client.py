"""The control client against the real local Triton, over HTTP and gRPC alike."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.memory.models import ALLOC_MODEL_PY, publish_alloc_model
from tritonops.dev.stack import free_port
from tritonops.errors import TritonError
from tritonops.memory.loads import unload_and_wait
from tritonops.memory.probes import HostProbe
from tritonops.triton.client import ControlClient, UnloadTimeout

REGION = "eu-west-1"


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, dev_stack) -> ControlClient:
    server = dev_stack.config.region(REGION).servers[0]
    return ControlClient.from_server(server, request.param, timeout_s=10)


def test_health_metadata_index_load_stats_unload(client: ControlClient, dev_stack, unique) -> None:
    region = dev_stack.config.region(REGION)
    model = unique("ctl")
    publish_alloc_model(region, model, 0)
    assert client.live() and client.ready()
    assert client.server_metadata()["version"] == "2.51.0"
    # In explicit mode the index lists what is in the repository, loaded or not.
    assert [(m.version, m.state) for m in client.model_states(model)] == [(None, "UNAVAILABLE")]

    client.load(model)
    assert client.loaded_versions(model) == [1]
    before = client.statistics(model)
    assert [(s["name"], s["version"], s["inference_count"], s["last_inference"]) for s in before] == [
        (model, "1", 0, 0)
    ]
    t_ms = int(time.time() * 1000)
    out = client.infer(model, [("X", "FP32", np.array([[1.0, 2.0]], dtype=np.float32))], version=1)
    assert out["Y"].tolist() == [[2.0, 3.0]]
    # Triton records the statistics a moment after the response leaves.
    deadline = time.monotonic() + 5
    while True:
        (after,) = client.statistics(model)
        if after["inference_count"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after["inference_count"] == 1 and after["execution_count"] == 1, after
    assert t_ms - 1000 <= after["last_inference"] <= int(time.time() * 1000) + 1000

    res = client.unload(model, wait=True, timeout_s=30)
    assert res.seconds < 30
    states = client.model_states(model)
    assert [m.state for m in states] == ["UNAVAILABLE"] and states[0].reason == "unloaded"
    with pytest.raises(TritonError, match=rf"model '{model}': inference \(version 1\) failed"):
        client.infer(model, [("X", "FP32", np.array([[1.0, 2.0]], dtype=np.float32))], version=1)


def test_load_with_config_and_file_overrides(client: ControlClient, unique) -> None:
    # Nothing in the bucket at all: the override alone defines the model.
    import json

    model = unique("override")
    cfg = {
        "backend": "python",
        "max_batch_size": 4,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [2]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [2]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
    }
    client.load(model, config=json.dumps(cfg), files={"file:1/model.py": ALLOC_MODEL_PY.encode()})
    assert client.loaded_versions(model) == [1]
    client.unload(model, wait=True, timeout_s=30)
    assert client.loaded_versions(model) == []


def test_files_without_config_is_refused_before_calling_triton(client: ControlClient) -> None:
    with pytest.raises(TritonError, match="file overrides need a config override"):
        client.load("whatever", files={"file:1/model.py": b""})


def test_model_not_in_repository(client: ControlClient, unique) -> None:
    model = unique("missing")
    with pytest.raises(TritonError) as ei:
        client.load(model)
    msg = str(ei.value)
    assert f"model {model!r} is not in the server's repository" in msg
    assert "\n" not in msg
    assert "failed to load" in msg  # Triton's own words are kept


def test_load_failure_passes_tritons_reason_verbatim(client: ControlClient, dev_stack, unique) -> None:
    model = unique("broken")
    publish_alloc_model(dev_stack.config.region(REGION), model, 0, broken=True)
    with pytest.raises(TritonError) as ei:
        client.load(model)
    msg = str(ei.value)
    assert msg.startswith(f"server {client.url}: load of model {model!r} failed: ")
    assert "RuntimeError: tritonops test: this model cannot load" in msg
    assert "\n" not in msg
    (state,) = client.model_states(model)
    assert state.state == "UNAVAILABLE" and "this model cannot load" in state.reason


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_down_is_one_line_and_fast(protocol: str) -> None:
    port = free_port()  # nothing listens there
    c = ControlClient.connect(f"127.0.0.1:{port}", protocol, timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(TritonError) as ei:
        c.index()
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert msg.startswith(f"server 127.0.0.1:{port}: repository index failed: ")
    assert "unreachable" in msg or "timed out" in msg
    assert "\n" not in msg


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(s.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield s.getsockname()[1]
    stop.set()
    th.join(2)
    for c in conns:
        c.close()
    s.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_timeout_is_reported_and_bounded(protocol: str, silent_server: int) -> None:
    c = ControlClient.connect(f"127.0.0.1:{silent_server}", protocol, timeout_s=1, load_timeout_s=1.5)
    for call in (c.index, lambda: c.load("m")):
        t0 = time.monotonic()
        with pytest.raises(TritonError) as ei:
            call()
        assert time.monotonic() - t0 < 4
        assert "timed out after" in str(ei.value) or "unreachable" in str(ei.value), str(ei.value)


def test_metrics_scrape(client: ControlClient) -> None:
    text = client.metrics()
    assert "nv_cpu_memory_total_bytes" in text
    assert ControlClient.connect("http://127.0.0.1:1").metrics_url is None
    with pytest.raises(TritonError, match="no metrics_url configured"):
        ControlClient.connect("http://127.0.0.1:1").metrics()


def test_same_model_loads_in_flight_are_issued_once(dev_stack, fresh_triton, unique) -> None:
    t = fresh_triton(REGION)
    model = unique("dedup")
    publish_alloc_model(dev_stack.config.region(REGION), model, 16)
    # Separate client objects for the same server, as separate reconcile workers would have.
    clients = [ControlClient.connect(t.http_url) for _ in range(2)] + [ControlClient.connect(t.http_url, "http")]
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def go(c: ControlClient) -> None:
        barrier.wait()
        try:
            c.load(model)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go, args=(clients[i % 3],)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    assert clients[0].loaded_versions(model) == [1]
    # Triton reloads on every load call: six overlapping calls, one load.
    assert Path(t.record.log).read_text().count(f"successfully loaded '{model}'") == 1


def test_unload_wait_times_out_when_memory_does_not_come_back(dev_stack, fresh_triton, unique) -> None:
    t = fresh_triton(REGION)
    model = unique("alloc8")
    publish_alloc_model(dev_stack.config.region(REGION), model, 8)
    c = ControlClient.connect(t.http_url)
    c.load(model)
    # Expect far more back than the model ever held: the wait must give up at its timeout and say so.
    t0 = time.monotonic()
    with pytest.raises(UnloadTimeout) as ei:
        unload_and_wait(c, HostProbe(t.record.pid), model, timeout_s=3, expect_release_bytes=10 << 30)
    assert 2.5 < time.monotonic() - t0 < 8
    assert not ei.value.still_loaded
    assert "unloaded but memory not back after 3s" in str(ei.value)
    assert c.loaded_versions(model) == []


def test_http_and_grpc_clients_of_one_configured_server_share_its_identity(dev_stack) -> None:
    server = dev_stack.config.region(REGION).servers[0]
    h, g = ControlClient.from_server(server, "http"), ControlClient.from_server(server, "grpc")
    assert h.key == g.key == f"server:{server.name}"
    assert ControlClient.connect(server.http_url).key != ControlClient.connect(server.grpc_url, "grpc").key
