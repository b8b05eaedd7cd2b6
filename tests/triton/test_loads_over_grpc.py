"""Loads go over gRPC where the server has both endpoints, so status calls stay fast meanwhile.

Triton's HTTP frontend runs a model load on one of its HTTP threads (8 by default), and every
request on a connection that thread serves waits until the load ends
(triton-inference-server/server#8958). Reconcile asks statistics, configs and test inferences
while other models load: over HTTP alone those calls took up to 1.5 s each, for 20 loads four at a
time. Here eight slow loads (3 s each) hold every HTTP thread they would run on.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.models import python_model
from tests.reconcile.conftest import Publisher
from tritonops.config import ServerConfig
from tritonops.dev.stack import free_port
from tritonops.triton.client import ControlClient

REGION = "eu-west-1"
SLOW_S = 3


def test_status_calls_answer_while_slow_loads_run(dev_stack, fresh_triton, unique) -> None:
    pub = Publisher(dev_stack.config.region(REGION))
    slow = python_model(2.0, init=f"import time; time.sleep({SLOW_S})").encode()
    models = [unique("slowload") for _ in range(8)]
    for m in models:
        pub.publish(m, 1, {"model.py": slow})
    t = fresh_triton(REGION)
    server = ServerConfig(name="both", http_url=t.http_url, grpc_url=t.grpc_url, load_threads=8)
    client = ControlClient.from_server(server, timeout_s=30)
    assert client.protocol.value == "http" and client.live()
    waits: list[float] = []
    with ThreadPoolExecutor(len(models)) as pool:
        futures = [pool.submit(client.load, m) for m in models]
        time.sleep(0.5)  # every load is in flight
        while not all(f.done() for f in futures):
            t0 = time.monotonic()
            client.statistics()
            waits.append(time.monotonic() - t0)
            time.sleep(0.1)
        for f in futures:
            f.result()
    assert sorted(client.loaded_versions(m) for m in models) == [[1]] * len(models)
    assert len(waits) >= 10 and max(waits) < 1.0, waits


def test_an_unreachable_grpc_endpoint_falls_back_to_http(
    dev_stack, unique, caplog: pytest.LogCaptureFixture
) -> None:
    """A grpc_url the reconciler cannot reach (a firewall, a typo) must not stop loads that HTTP can do."""
    pub = Publisher(dev_stack.config.region(REGION))
    m = unique("fallback")
    pub.publish(m, 1, {"model.py": python_model(3.0).encode()})
    live = dev_stack.config.region(REGION).servers[0]
    server = live.model_copy(update={"grpc_url": f"127.0.0.1:{free_port()}"})
    client = ControlClient.from_server(server, timeout_s=10)
    with caplog.at_level(logging.WARNING, logger="tritonops.triton.client"):
        client.load(m)
        client.unload(m, wait=True)
    assert client.loaded_versions(m) == []
    assert sum("unreachable for loads" in r.getMessage() for r in caplog.records) == 1, caplog.text
