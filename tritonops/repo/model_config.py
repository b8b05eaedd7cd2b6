"""Triton's model config, in one place: config.pbtxt read and written with Triton's own schema
(``model_config_pb2``), the version policy (which versions it makes live, and rewriting it), the
JSON form Triton's load API takes as an override, warmup inputs generated from it, and the one
generator of a config from a graph's inputs and outputs (``convert`` and ``repo add``).

Parsing with the real protobuf schema means an unknown or misspelt field is an error here, as it
is in Triton, instead of a key silently ignored by a hand-written parser.

Writing has one trap: ModelConfig is proto3, and protobuf's text format leaves out every scalar
equal to its zero value. ``max_batch_size: 0`` is the one that matters to a reader (it says "this
model does not batch, dims are the full shape"), so it is always written explicitly.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, text_format

from tritonops.errors import RepositoryError, TritonError
from tritonops.strenum import StrEnum

if TYPE_CHECKING:
    import numpy as np

_PB2 = "tritonclient.grpc.model_config_pb2"


def _load_model_config_pb2() -> ModuleType:
    """Triton's schema module without ``tritonclient.grpc``'s ``__init__``.

    That ``__init__`` imports grpc and numpy (about 0.15 s) which parsing a config never uses; the
    pb2 module itself needs only protobuf. It is registered under its real name, so a later
    ``import tritonclient.grpc`` (the gRPC client) reuses it rather than registering the schema twice.
    """
    if _PB2 in sys.modules:
        return sys.modules[_PB2]
    import tritonclient

    path = Path(tritonclient.__path__[0]) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location(_PB2, path)
    if spec is None or spec.loader is None or not path.is_file():  # an unusual install: the usual way
        return importlib.import_module(_PB2)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[_PB2] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[_PB2]
        raise
    return mod


if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2
else:
    model_config_pb2 = _load_model_config_pb2()

ModelConfig = model_config_pb2.ModelConfig


# platform -> the backend that runs it (Triton's own mapping); an ensemble runs no backend.
PLATFORM_BACKEND = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "ensemble": "",
}


def backend_of(cfg: model_config_pb2.ModelConfig) -> str:
    """The backend that runs the model: its ``backend``, else the one its ``platform`` implies."""
    return cfg.backend or PLATFORM_BACKEND.get(cfg.platform, "")


def parse_config_text(text: str, source: str) -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt text; a RepositoryError names ``source`` and the line on bad text."""
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        line = e.GetLine()
        # ParseError's message starts with "line:col : "; keep only the reason.
        reason = re.sub(r"^\d+:\d+\s*:\s*", "", str(e))
        where = f"{source}:{line}" if line else source
        raise RepositoryError(f"{where}: invalid config.pbtxt: {reason}") from None
    return cfg


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """Read and parse a config.pbtxt file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RepositoryError(f"{path}: config.pbtxt missing") from None
    except UnicodeDecodeError as e:
        raise RepositoryError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_config_text(text, str(path))


def config_to_text(cfg: model_config_pb2.ModelConfig) -> str:
    """Text format, with ``max_batch_size: 0`` kept explicit (protobuf would drop it)."""
    text = text_format.MessageToString(cfg)
    if cfg.max_batch_size == 0:
        # Put it after the top-level name/platform lines, where people look for it.
        lines = text.splitlines(keepends=True)
        at = 0
        while at < len(lines) and re.match(r"^(name|platform): ", lines[at]):
            at += 1
        lines.insert(at, "max_batch_size: 0\n")
        text = "".join(lines)
    return text


def line_of(text: str, pattern: str, start: int = 1) -> int | None:
    """1-based line of the first line (from ``start``) matching the regex ``pattern``; None if none."""
    rx = re.compile(pattern)
    for i, line in enumerate(text.splitlines(), 1):
        if i >= start and rx.search(line):
            return i
    return None


def config_dict(text: str, source: str = "config.pbtxt") -> dict[str, Any]:
    """config.pbtxt -> the JSON form Triton's load API accepts (proto field names)."""
    msg = parse_config_text(text, source)  # the one parser: same errors everywhere
    return dict(json_format.MessageToDict(msg, preserving_proto_field_name=True))


# -- version policy ----------------------------------------------------------------------------------


def live_versions(cfg: model_config_pb2.ModelConfig | None, versions: list[int]) -> list[int]:
    """Which of ``versions`` the config's version policy makes live (sorted).

    No policy is Triton's default, ``latest 1``; ``specific`` keeps those of its list present,
    ``latest {k}`` the k highest, ``all`` every one.
    """
    have = sorted(versions)
    which = cfg.version_policy.WhichOneof("policy_choice") if cfg is not None else None
    if cfg is None or which is None:
        return have[-1:]
    if which == "specific":
        wanted = set(cfg.version_policy.specific.versions)
        return [v for v in have if v in wanted]
    if which == "latest":
        return have[-max(cfg.version_policy.latest.num_versions, 1) :]
    return have


def set_specific_versions(cfg: model_config_pb2.ModelConfig, versions: list[int]) -> None:
    """Rewrite the config's version policy to ``specific`` over exactly ``versions``."""
    cfg.ClearField("version_policy")
    cfg.version_policy.specific.SetInParent()
    cfg.version_policy.specific.versions.extend(versions)


def override_json(config: dict[str, Any], model: str, versions: list[int]) -> str:
    """A load-time config override (JSON) pinning ``model`` to ``versions``."""
    c = dict(config)
    c["name"] = model
    c["version_policy"] = {"specific": {"versions": sorted(versions)}}
    return json.dumps(c, sort_keys=True)


# -- warmup ------------------------------------------------------------------------------------------

# Triton's data types as numpy type names (numpy is imported only when a warmup is built).
_NP = {
    "TYPE_BOOL": "bool_",
    "TYPE_UINT8": "uint8",
    "TYPE_UINT16": "uint16",
    "TYPE_UINT32": "uint32",
    "TYPE_UINT64": "uint64",
    "TYPE_INT8": "int8",
    "TYPE_INT16": "int16",
    "TYPE_INT32": "int32",
    "TYPE_INT64": "int64",
    "TYPE_FP16": "float16",
    "TYPE_FP32": "float32",
    "TYPE_FP64": "float64",
    "TYPE_STRING": "object_",
}


def warmup_inputs(config: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """One small request from the config's inputs: variable dims become 1, batch size 1, zeros."""
    import numpy as np

    out = []
    batched = int(config.get("max_batch_size", 0) or 0) > 0
    for inp in config.get("input", []):
        dtype = str(inp.get("data_type", "TYPE_FP32"))
        shape = [max(1, int(d)) for d in inp.get("dims", [])]
        if batched:
            shape = [1, *shape]
        np_name = _NP.get(dtype)
        if np_name is None:
            raise TritonError(f"input {inp.get('name')!r}: data_type {dtype} has no warmup generator")
        arr = (
            np.array([b"0"] * int(np.prod(shape)), dtype=np.object_).reshape(shape)
            if np_name == "object_"
            else np.zeros(shape, dtype=getattr(np, np_name))
        )
        out.append((str(inp["name"]), dtype.removeprefix("TYPE_").replace("STRING", "BYTES"), arr))
    return out


# -- generator ---------------------------------------------------------------------------------------

class Runtime(StrEnum):
    """How Triton serves a model.onnx (or a TensorRT plan)."""

    onnxruntime = "onnxruntime"
    # The ONNX file served by onnxruntime inside Triton's python backend (convert's generated
    # model.py), for servers built with the python backend only.
    onnxruntime_python = "onnxruntime-python"
    tensorrt = "tensorrt"


# runtime -> (platform, backend) in the config.
RUNTIMES: dict[Runtime, tuple[str, str]] = {
    Runtime.onnxruntime: ("onnxruntime_onnx", ""),
    Runtime.onnxruntime_python: ("", "python"),
    Runtime.tensorrt: ("tensorrt_plan", ""),
}


@dataclass(frozen=True)
class GraphTensor:
    """An input or output of a model graph, as the generator needs it."""

    name: str
    data_type: int  # Triton's DataType (model_config_pb2.TYPE_*)
    shape: Sequence[int | str]  # a name (or -1) for a dynamic dimension; the full graph shape


def generate_config(
    model: str,
    inputs: Sequence[GraphTensor],
    outputs: Sequence[GraphTensor],
    runtime: Runtime | str,
    *,
    max_batch_size: int = 0,
    dynamic_batching: model_config_pb2.ModelDynamicBatching | None = None,
    instance_group: model_config_pb2.ModelInstanceGroup | None = None,
    warmup: bool = False,
    cc_model_filenames: Mapping[str, str] | None = None,
) -> model_config_pb2.ModelConfig:
    """The one config generator (``convert`` and ``repo add``): IO from the graph, the rest given.

    With ``max_batch_size > 0`` the first dimension of every tensor is the batch (the caller has
    checked it is dynamic) and dims are per sample. TensorRT always runs on KIND_GPU.
    """
    runtime = Runtime(runtime)  # ValueError for an unknown one: callers check their input first
    cfg = model_config_pb2.ModelConfig(name=model, max_batch_size=max_batch_size)
    cfg.platform, cfg.backend = RUNTIMES[runtime]
    for cc, name in sorted((cc_model_filenames or {}).items()):
        cfg.cc_model_filenames[cc] = name
    batching = max_batch_size > 0
    for t in inputs:
        _fill_io(cfg.input.add(), t, batching)
    for t in outputs:
        _fill_io(cfg.output.add(), t, batching)
    if dynamic_batching is not None:
        cfg.dynamic_batching.CopyFrom(dynamic_batching)
    if instance_group is not None:
        g = cfg.instance_group.add()
        g.CopyFrom(instance_group)
        if runtime is Runtime.tensorrt:
            g.kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    if warmup:
        _add_warmup(cfg, [t.name for t in inputs], batching)
    return cfg


def _fill_io(
    io: model_config_pb2.ModelInput | model_config_pb2.ModelOutput, t: GraphTensor, batching: bool
) -> None:
    io.name = t.name
    io.data_type = t.data_type
    shape = list(t.shape[1:] if batching else t.shape)
    dims = [d if isinstance(d, int) else -1 for d in shape]
    if dims:
        io.dims.extend(dims)
    else:
        # A scalar: Triton needs dims. Per sample (shape [batch]), reshape: [ ] drops the 1; a
        # non-batching model cannot have an empty reshape (Triton: "scalar tensors are not
        # supported"), and its backends take dims [ 1 ] for a scalar graph tensor.
        io.dims.append(1)
        if batching:
            io.reshape.SetInParent()


def _add_warmup(cfg: model_config_pb2.ModelConfig, names: list[str], batching: bool) -> None:
    w = cfg.model_warmup.add()
    w.name = "random"
    w.batch_size = 1 if batching else 0
    for name, io in zip(names, cfg.input, strict=True):
        wi = w.inputs[name]
        wi.data_type = io.data_type
        # Dynamic non-batch dims get a size of 1 for the warm-up request.
        wi.dims.extend([d if d > 0 else 1 for d in io.dims])
        wi.random_data = True
