"""A health check of a region, end to end: publish a tiny python model, load it, query it, unload it.

``tritonops dev check`` runs it on every region of the local stack; the test harness uses the same
code, so what the demo shows is what the tests prove.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from tritonops.config import RegionConfig
from tritonops.errors import TritonError
from tritonops.fileio import sha256_bytes
from tritonops.store import open_store

log = logging.getLogger(__name__)

SMOKE_MODEL = "tritonops-smoke"

SMOKE_CONFIG = """\
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
version_policy: { specific: { versions: [ 1 ] } }
"""

# Y = 2 * X + 1: easy to check, impossible to pass by echoing the input.
SMOKE_MODEL_PY = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            y = (2.0 * x + 1.0).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return responses
"""


@dataclass
class SmokeResult:
    region: str
    server: str
    model: str
    input: list[float]
    output: list[float]
    load_seconds: float
    ok: bool


def publish_smoke_model(region: RegionConfig, model: str = SMOKE_MODEL) -> None:
    store = open_store(region)
    try:
        # Version file first, then the config that makes it loadable.
        for key, text in ((f"{model}/1/model.py", SMOKE_MODEL_PY), (f"{model}/config.pbtxt", SMOKE_CONFIG)):
            data = text.encode()
            store.put_bytes(key, data, sha256_bytes(data))
    finally:
        store.close()


def check_server(region_name: str, region: RegionConfig, model: str = SMOKE_MODEL) -> list[SmokeResult]:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    publish_smoke_model(region, model)
    results = []
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    for server in region.servers:
        if not server.http_url:
            continue
        url = server.http_url.removeprefix("http://").removeprefix("https://")
        client = httpclient.InferenceServerClient(url, connection_timeout=10, network_timeout=60)
        try:
            t0 = time.monotonic()
            client.load_model(model)
            load_s = time.monotonic() - t0
            inp = httpclient.InferInput("X", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            res = client.infer(model, [inp])
            y = res.as_numpy("Y")
            client.unload_model(model)
        except InferenceServerException as e:
            raise TritonError(f"server {server.name} ({server.http_url}): model {model}: {e.message()}") from None
        finally:
            client.close()
        assert y is not None
        ok = bool(np.allclose(y, 2 * x + 1))
        results.append(
            SmokeResult(
                region=region_name,
                server=server.name,
                model=model,
                input=x[0].tolist(),
                output=y[0].tolist(),
                load_seconds=round(load_s, 3),
                ok=ok,
            )
        )
    return results
