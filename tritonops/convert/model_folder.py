"""The Triton side of a target: config.pbtxt generated from the graph (by repo/model_config.py's
generator, from the recipe's settings), and the version folder.

Runtimes:
- ``onnxruntime``: production, ``platform: "onnxruntime_onnx"``, the version folder holds model.onnx.
- ``onnxruntime-python``: ``backend: "python"``; the version folder holds model.onnx and a
  generated model.py that serves it with onnxruntime, with the same inputs and outputs. For
  servers built with the python backend only (the local stack), so converted models serve end
  to end there and in tests.
- ``tensorrt``: ``platform: "tensorrt_plan"``, one plan per GPU type via ``cc_model_filenames``.
"""

from __future__ import annotations

from tritonops.convert.export import TensorInfo
from tritonops.convert.recipe import DTYPES, TritonSpec
from tritonops.errors import ConversionError
from tritonops.repo.model_config import GraphTensor, Runtime, generate_config
from tritonops.repo.model_config import model_config_pb2 as mc
from tritonops.repo.version_folder import MODEL_PY, ONNX_FILE, stage_version

__all__ = ["MODEL_PY", "ONNX_FILE", "make_config", "stage_version"]

_TRITON_TYPE = {k: getattr(mc, v) for k, v in DTYPES.items()}


def make_config(
    model: str,
    spec: TritonSpec,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    runtime: Runtime | str,
    cc_files: dict[str, str] | None = None,
) -> mc.ModelConfig:
    """A Triton config from the graph's inputs/outputs and the recipe's Triton settings."""
    try:
        runtime = Runtime(runtime)
    except ValueError:
        raise ConversionError(f"{model}: unknown runtime {runtime!r}") from None
    batching = spec.max_batch_size > 0
    tensors = {"input": inputs, "output": outputs}
    for kind, ts in tensors.items():
        for t in ts:
            if batching and (not t.shape or isinstance(t.shape[0], int)):
                raise ConversionError(
                    f"{model}: {kind} {t.name!r}: triton.max_batch_size > 0 but the graph's first dimension is "
                    f"{t.shape[0] if t.shape else 'missing'} (not a batch dimension); set max_batch_size: 0"
                )
    dynamic_batching = None
    if spec.dynamic_batching is not None:
        dynamic_batching = mc.ModelDynamicBatching(
            max_queue_delay_microseconds=spec.dynamic_batching.max_queue_delay_microseconds,
            preferred_batch_size=spec.dynamic_batching.preferred_batch_size,
        )
    group = mc.ModelInstanceGroup(
        kind=getattr(mc.ModelInstanceGroup, spec.instance_group.kind), count=spec.instance_group.count
    )
    graph = {kind: [GraphTensor(t.name, _TRITON_TYPE[t.dtype], t.shape) for t in ts] for kind, ts in tensors.items()}
    return generate_config(
        model,
        graph["input"],
        graph["output"],
        runtime,
        max_batch_size=spec.max_batch_size,
        dynamic_batching=dynamic_batching,
        instance_group=group,
        warmup=spec.warmup,
        cc_model_filenames=cc_files if runtime is Runtime.tensorrt else None,
    )
