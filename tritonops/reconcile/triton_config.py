"""Triton config helpers for reconcile: the load-time config override and warmup inputs.

Model control itself goes through ``tritonops.triton.client.ControlClient`` (see ``adapters``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tritonops.errors import TritonError
from tritonops.repo.pbtxt import parse_config_text


def parse_config(text: str, source: str = "config.pbtxt") -> dict[str, Any]:
    """config.pbtxt -> the JSON form Triton's load API accepts (proto field names)."""
    from google.protobuf import json_format

    msg = parse_config_text(text, source)  # the repository's parser: same errors everywhere
    return dict(json_format.MessageToDict(msg, preserving_proto_field_name=True))


def config_for_versions(config: dict[str, Any], model: str, versions: list[int]) -> str:
    """The config with an explicit version policy: reconcile decides which versions are loaded."""
    c = dict(config)
    c["name"] = model
    c["version_policy"] = {"specific": {"versions": sorted(versions)}}
    return json.dumps(c, sort_keys=True)


_NP = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def warmup_inputs(config: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """One small request from the config's inputs: variable dims become 1, batch size 1, zeros."""
    out = []
    batched = int(config.get("max_batch_size", 0) or 0) > 0
    for inp in config.get("input", []):
        dtype = str(inp.get("data_type", "TYPE_FP32"))
        shape = [max(1, int(d)) for d in inp.get("dims", [])]
        if batched:
            shape = [1, *shape]
        np_type = _NP.get(dtype)
        if np_type is None:
            raise TritonError(f"input {inp.get('name')!r}: data_type {dtype} has no warmup generator")
        arr = (
            np.array([b"0"] * int(np.prod(shape)), dtype=np.object_).reshape(shape)
            if np_type is np.object_
            else np.zeros(shape, dtype=np_type)
        )
        out.append((str(inp["name"]), dtype.removeprefix("TYPE_").replace("STRING", "BYTES"), arr))
    return out
