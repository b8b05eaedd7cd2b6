"""Two regions, each with its own fresh Tritons on a unique bucket prefix and its own real Envoy.

eu-west-1 has two servers (a, b), us-east-1 one (a). Models are published like `tritonops sync`
publishes them and loaded on chosen servers at chosen versions through Triton's own API.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from tests.conftest import REGIONS, Stack
from tests.reconcile.conftest import Publisher, model_py
from tritonops.config import Config, load_config
from tritonops.dev import stack
from tritonops.dev.envoy import EnvoyServer, start_envoy
from tritonops.store.s3 import s3_client

EU, US = REGIONS
SERVERS = {EU: ("a", "b"), US: ("a",)}


def override(model: str, versions: list[int]) -> str:
    return json.dumps({
        "name": model, "backend": "python", "max_batch_size": 8,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "version_policy": {"specific": {"versions": versions}},
    })  # fmt: skip


X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@dataclass
class Routed:
    config_path: Path
    data: dict[str, Any]
    servers: dict[str, dict[str, stack.TritonServer]]  # region -> name -> server
    envoys: dict[str, EnvoyServer]
    publishers: dict[str, Publisher]

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def publish(self, region: str, model: str, versions: list[int]) -> None:
        for v in versions:
            self.publishers[region].publish(model, v, {"model.py": model_py(float(v))})

    def load(self, region: str, server: str, model: str, version: int) -> None:
        c = httpclient.InferenceServerClient(self.servers[region][server].http_url.removeprefix("http://"))
        c.load_model(model, config=override(model, [version]))

    def unload(self, region: str, server: str, model: str) -> None:
        c = httpclient.InferenceServerClient(self.servers[region][server].http_url.removeprefix("http://"))
        c.unload_model(model)

    def http(self, region: str) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(self.envoys[region].listen, network_timeout=30)

    def grpc(self, region: str) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.envoys[region].listen)

    def rewrite(self, edit: Callable[[dict[str, Any]], None]) -> None:
        edit(self.data)
        self.config_path.write_text(yaml.safe_dump(self.data, sort_keys=False))


def infer_http(c: httpclient.InferenceServerClient, model: str, version: str = "") -> float:
    i = httpclient.InferInput("X", list(X.shape), "FP32")
    i.set_data_from_numpy(X)
    return float(c.infer(model, [i], model_version=version).as_numpy("Y")[0][0])


def infer_grpc(c: grpcclient.InferenceServerClient, model: str, version: str = "") -> float:
    i = grpcclient.InferInput("X", list(X.shape), "FP32")
    i.set_data_from_numpy(X)
    headers = {"tritonops-model": model, **({"tritonops-model-version": version} if version else {})}
    return float(c.infer(model, [i], model_version=version, headers=headers).as_numpy("Y")[0][0])


@pytest.fixture(scope="module")
def routed_factory(dev_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Routed]]:
    started: list[stack.ProcessRecord] = []

    def make(models: dict[str, Any] | None = None) -> Routed:
        tmp = tmp_path_factory.mktemp("routed")
        regions: dict[str, Any] = {}
        servers: dict[str, dict[str, stack.TritonServer]] = {}
        envoys: dict[str, EnvoyServer] = {}
        pubs: dict[str, Publisher] = {}
        for r in REGIONS:
            base = dev_stack.config.region(r)
            bucket = f"s3://{base.bucket_name}/route-{uuid.uuid4().hex[:10]}"
            rc = base.model_copy(update={"bucket": bucket, "servers": []})
            s3_client(rc).put_object(Bucket=rc.bucket_name, Key=f"{rc.prefix}/README", Body=b"route test\n")
            servers[r] = {}
            for name in SERVERS[r]:
                t = stack.start_triton(
                    dev_stack.triton_home, rc.triton_repository_url(), tmp / f"triton-{r}-{name}.log",
                    dev_stack.triton_env(),
                )  # fmt: skip
                started.append(t.record)
                servers[r][name] = t
            e = start_envoy(r, tmp / "envoy" / r)
            started.append(e.record)
            envoys[r] = e
            pubs[r] = Publisher(rc)
            regions[r] = {
                "bucket": bucket,
                "endpoint_url": base.endpoint_url,
                "profile": base.profile,
                "credentials_file": str(base.credentials_file),
                "servers": [
                    {"name": f"{r}-{n}", "http_url": t.http_url, "grpc_url": t.grpc_url, "metrics_url": t.metrics_url}
                    for n, t in servers[r].items()
                ],
                "route": {"listen": e.listen, "admin": e.admin, "config_dir": e.config_dir, "retry_after_s": 7},
            }
        data = {"repository": str(tmp / "repo"), "state_dir": str(tmp / "state"), "regions": regions,
                "models": models or {}}  # fmt: skip
        path = tmp / "tritonops.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return Routed(path, data, servers, envoys, pubs)

    yield make
    for rec in reversed(started):
        stack.stop(rec)
