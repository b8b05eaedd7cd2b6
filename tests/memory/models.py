"""Python-backend test models that hold a known amount of memory, published to a region's bucket."""

from __future__ import annotations

from tritonops.config import RegionConfig
from tritonops.store.s3 import s3_client

MIB = 1 << 20

# Allocates `alloc_mib` MiB in initialize() with numpy.ones, so every page is touched and really resident.
ALLOC_MODEL_PY = """\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        mib = int(params.get("alloc_mib", {}).get("string_value", "0"))
        self.block = np.ones(mib << 20, dtype=np.uint8) if mib else None

    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x + 1.0).astype(np.float32))]))
        return out
"""


def alloc_config(alloc_mib: int) -> str:
    return f"""\
backend: "python"
max_batch_size: 4
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
version_policy: {{ specific: {{ versions: [ 1 ] }} }}
parameters: {{ key: "alloc_mib" value: {{ string_value: "{alloc_mib}" }} }}
"""


def publish_alloc_model(region: RegionConfig, model: str, alloc_mib: int, *, broken: bool = False) -> None:
    """Upload ``model`` (version 1) to the region's bucket: version files first, then the config."""
    client = s3_client(region)
    base = f"{region.prefix}/{model}" if region.prefix else model
    body = ALLOC_MODEL_PY if not broken else "raise RuntimeError('tritonops test: this model cannot load')\n"
    client.put_object(Bucket=region.bucket_name, Key=f"{base}/1/model.py", Body=body.encode())
    client.put_object(Bucket=region.bucket_name, Key=f"{base}/config.pbtxt", Body=alloc_config(alloc_mib).encode())
